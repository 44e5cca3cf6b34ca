"""`kdc compile --batch` against a loopback server speaking the OpenAI files + batches endpoints
(tests/batch_server.py, the same responder as the live teacher server)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from batch_server import BatchServer
from compiler.compile import batchrun
from compiler.llm import backend
from compiler.llm.batch import BatchClient, BatchError, answer_of
from compiler.llm.cache import Cache
from compiler.llm.teacher import Completion, Teacher
from taxcopy import private_taxonomy
from test_compile import kdc  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-test-SECRET-7f3a9c"


@pytest.fixture
def tax(tmp_path, example_taxonomy) -> Path:
    return private_taxonomy(tmp_path, example_taxonomy)


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


def args(tax: Path, out: Path, srv: BatchServer, *extra) -> list:
    return ["compile", tax, "--out", out, "--teacher", "openai/teacher-test", "--api-base", srv.url,
            "--concurrency", "8", "--samples-per-node", "3", "--no-judge", "--batch-poll", "0.01", *extra]


def datasets(out: Path) -> dict[str, bytes]:
    """Every node file and mix, byte for byte."""
    return {str(p.relative_to(out)): p.read_bytes() for sub in ("nodes", "mixes")
            for p in sorted((out / sub).rglob("*")) if p.is_file()}


def live_chat(srv: BatchServer) -> int:
    return srv.chat_requests - srv.batch_lines


# --------------------------------------------------------------------------- the client
def _teacher(srv: BatchServer) -> Teacher:
    return Teacher("openai/teacher-test", api_bases=[srv.url], max_retries=0)


def _line(i: int) -> dict:
    return {"custom_id": f"k{i}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "teacher-test", "messages": [{"role": "user", "content": f"say {i}"}]}}


def test_client_uploads_creates_polls_through_each_status_and_reads_output_and_errors():
    with BatchServer(fail_item=lambda line: "server_error" if line["custom_id"] == "k1" else None) as srv:
        t = _teacher(srv)
        lt = backend.load()
        client = BatchClient(lt, t)

        async def go():
            bid = await client.submit([_line(0), _line(1), _line(2)], {"kdc": "test"})
            seen = []
            while True:
                st = await client.retrieve(bid)
                seen.append(st.status)
                if st.done:
                    return bid, seen, st, await client.lines(st.output_file_id), await client.lines(st.error_file_id)

        bid, seen, st, out, errs = asyncio.run(go())
    assert srv.uploads == 1 and srv.creates == 1 and bid in srv.batches
    assert seen == ["in_progress", "completed"] and srv.batches[bid]["status"] == "completed"
    assert st.counts == {"total": 3, "completed": 2, "failed": 1}
    assert sorted(o["custom_id"] for o in out) == ["k0", "k2"] and [e["custom_id"] for e in errs] == ["k1"]
    answers = {o["custom_id"]: answer_of(lt, o, t) for o in out + errs}
    assert isinstance(answers["k0"], Completion) and answers["k0"].text and answers["k0"].prompt_tokens == 2
    assert answers["k1"].code == "server_error"


def test_a_4xx_on_create_is_a_batch_error_with_its_status_and_no_key():
    with BatchServer(create_status=400) as srv:
        client = BatchClient(backend.load(), _teacher(srv))
        with pytest.raises(BatchError) as exc:
            asyncio.run(client.submit([_line(0)], {}))
    assert exc.value.status == 400 and "batch quota exceeded" in exc.value.message and KEY not in exc.value.message


# --------------------------------------------------------------------------- compile --batch
@pytest.mark.parametrize("augment", [False, True])
def test_batch_mode_writes_the_same_accepted_data_as_live_mode(tax, tmp_path, kdc, augment):
    live, batch = tmp_path / "live", tmp_path / "batch"
    cfg = tmp_path / "kdc.yaml"  # augmentation on: views (live) and typed calls (K records a batch item)
    cfg.write_text((tax / "kdc.yaml").read_text().replace("enabled: false", f"enabled: {str(augment).lower()}"))
    with BatchServer() as srv:
        assert kdc(*args(tax, live, srv, "--config", cfg))[0] == 0  # live (no --batch)
        calls = srv.chat_requests
        assert srv.creates == 0 and calls > 0
        srv.reset_log()
        code, _, err = kdc(*args(tax, batch, srv, "--config", cfg, "--batch"))
        assert code == 0, err
        assert srv.creates >= 1 and srv.batch_lines >= (6 if augment else 18)
        # every generation request went in a batch; only augmentation views are asked live
        live_formats = {((e["body"].get("response_format") or {}).get("json_schema") or {}).get("name")
                        for e in srv.log if not e.get("batch")}
        assert live_formats <= ({"kdc_detailed_summary", "kdc_extractive_summary", "kdc_atomic_facts"} if augment else set())
        assert srv.batch_lines + live_chat(srv) == calls  # not one request more than live mode
    assert datasets(batch) == datasets(live) and datasets(live)
    m = json.loads((batch / "manifest.json").read_text())
    b = m["totals"]["batch"]
    assert b["batches"] == srv.creates and b["answered"] == srv.batch_lines and b["failed_live"] == {}
    assert b["cost_usd"] is None  # the test model has no price: unknown, never 0


def test_failed_and_expired_items_are_asked_live_and_nothing_is_lost(tax, tmp_path, kdc):
    ref, out = tmp_path / "ref", tmp_path / "out"
    with BatchServer() as srv:
        assert kdc(*args(tax, ref, srv, "--batch"))[0] == 0
    fail = lambda line: "server_error" if int(line["custom_id"][:2], 16) % 3 == 0 else None  # noqa: E731
    with BatchServer(fail_item=fail) as srv:
        code, _, err = kdc(*args(tax, out, srv, "--batch"))
        assert code == 0, err
        failed = json.loads((out / "manifest.json").read_text())["totals"]["batch"]["failed_live"]
        assert failed.get("server_error", 0) >= 1 and "asked live" in err
        assert live_chat(srv) >= failed["server_error"]  # each failed item was asked live
    assert datasets(out) == datasets(ref)
    expired = tmp_path / "expired"
    with BatchServer(expire=True, expire_after=2) as srv:
        code, _, err = kdc(*args(tax, expired, srv, "--batch"))
        assert code == 0, err
        b = json.loads((expired / "manifest.json").read_text())["totals"]["batch"]
        assert b["failed_live"].get("batch_expired", 0) >= 1 and "ended expired" in err
        assert b["answered"] >= 2
    assert datasets(expired) == datasets(ref)


def test_a_refused_batch_falls_back_to_live_with_a_warning(tax, tmp_path, kdc):
    ref, out = tmp_path / "ref", tmp_path / "out"
    with BatchServer() as srv:
        assert kdc(*args(tax, ref, srv)[:-2])[0] == 0
    with BatchServer(create_status=400) as srv:
        code, _, err = kdc(*args(tax, out, srv, "--batch"))
        assert code == 0, err
        assert srv.creates >= 1 and srv.batch_lines == 0 and "refused" in err and "batch quota exceeded" in err
    assert datasets(out) == datasets(ref)


def test_a_round_bigger_than_a_batch_is_split_into_several(tax, tmp_path, kdc, monkeypatch):
    ref, out = tmp_path / "ref", tmp_path / "out"
    with BatchServer() as srv:
        assert kdc(*args(tax, ref, srv, "--batch"))[0] == 0
        whole = srv.creates
    monkeypatch.setattr(batchrun, "MAX_LINES", 4)
    with BatchServer() as srv:
        assert kdc(*args(tax, out, srv, "--batch"))[0] == 0
        sizes = [len(srv.files[b["input_file_id"]].splitlines()) for b in srv.batches.values()]
        assert srv.creates > whole and max(sizes) <= 4 and live_chat(srv) == 0
    assert datasets(out) == datasets(ref)


def test_a_compile_killed_after_create_resumes_the_stored_batch_without_resubmitting(tax, tmp_path, kdc,
                                                                                      monkeypatch):
    ref, out = tmp_path / "ref", tmp_path / "out"
    with BatchServer() as srv:
        assert kdc(*args(tax, ref, srv, "--batch"))[0] == 0
        rounds = srv.creates
    real = batchrun._read_back

    async def crash(*a, **kw):
        raise SystemExit(137)  # the process dies right after the batch was created and stored

    with BatchServer() as srv:
        monkeypatch.setattr(batchrun, "_read_back", crash)
        assert kdc(*args(tax, out, srv, "--batch"))[0] == 137
        assert srv.creates == 1 and not (out / "manifest.json").exists()
        cache = Cache(out / ".kdc" / "cache.sqlite")
        stored = cache.open_batches()
        cache.close()
        assert [bid for bid, _ in stored] == list(srv.batches)
        monkeypatch.setattr(batchrun, "_read_back", real)
        code, _, err = kdc(*args(tax, out, srv, "--batch"))
        assert code == 0, err
        assert "resuming batch" in err
        assert srv.creates == rounds  # the first round's batch was not submitted again
        m = json.loads((out / "manifest.json").read_text())["totals"]["batch"]
        assert m["resumed"] == 1 and m["batches"] == rounds - 1
    assert datasets(out) == datasets(ref)


def test_kill_9_while_the_batch_runs_then_rerun_resumes_it(tax, tmp_path, kdc):
    ref, out = tmp_path / "ref", tmp_path / "out"
    with BatchServer() as srv:
        assert kdc(*args(tax, ref, srv, "--batch"))[0] == 0
        rounds = srv.creates
    with BatchServer(hold=True) as srv:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([sys.executable, "-m", "compiler", *map(str, args(tax, out, srv, "--batch"))],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 240
        while srv.retrieves < 3 and proc.poll() is None:  # created, stored, and being polled
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert srv.creates == 1 and srv.batch_lines == 0
        srv.hold = False  # the provider finishes the batch while kdc is down
        code, _, err = kdc(*args(tax, out, srv, "--batch"))
        assert code == 0, err
        assert "resuming batch" in err and srv.creates == rounds
    assert datasets(out) == datasets(ref)


def test_dry_run_batch_shows_the_batch_price(tax, tmp_path, kdc):
    code, out, _ = kdc("compile", tax, "--teacher", "openai/gpt-4o-mini", "--api-base", "http://127.0.0.1:9/v1",
                       "--dry-run", "--batch", "--json", "--no-judge")
    assert code == 0
    plan = json.loads(out)
    live, batch = plan["totals"]["cost_usd"], plan["batch"]
    assert batch["basis"] == "litellm's batch prices" and 0 < batch["cost_usd"] < live
    assert abs(batch["cost_usd"] - live / 2) < live * 0.01  # OpenAI's batch prices: half the live ones


def test_batch_needs_a_provider_with_a_batch_api(tax, tmp_path, kdc):
    code, _, err = kdc("compile", tax, "--out", tmp_path / "o", "--teacher", "anthropic/claude-3-haiku-20240307",
                       "--api-base", "http://127.0.0.1:9/v1", "--batch", "--no-judge")
    assert code != 0 and "batch API" in err


def test_batch_settings_in_kdc_yaml_are_checked_with_their_line(tax, tmp_path):
    from compiler.config import load_config
    from compiler.errors import ConfigError

    cfg = tmp_path / "batch.yaml"
    cfg.write_text("teacher: openai/teacher-test\nbatch: true\nbatch_poll: 5\n")
    loaded = load_config(tax, cfg, {})
    assert loaded.batch is True and loaded.batch_poll == 5
    cfg.write_text("teacher: openai/teacher-test\nbatch: true\nbatch_poll: 0\n")
    with pytest.raises(ConfigError) as exc:
        load_config(tax, cfg, {})
    assert exc.value.line == 3 and "batch_poll" in str(exc.value)

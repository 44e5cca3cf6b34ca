"""The embedded default teacher (Gemma 3 270M base, llama.cpp) reached through litellm, offline."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import sys

import pytest
from jsonschema import Draft202012Validator

from compiler.llm.teacher import response_format, response_schema

LEAF = "compositional_skills/summarization/grounded/incident_report"


@pytest.fixture
def offline(monkeypatch):
    """Any connection except to this machine fails the test: the embedded teacher needs no network."""
    real = socket.socket.connect

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if self.family in (socket.AF_INET, socket.AF_INET6) and host not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"network access attempted: {address}")
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.mark.slow
def test_litellm_reaches_the_embedded_provider_and_gets_schema_valid_json(offline):
    from compiler.llm.teacher import Teacher

    teacher = Teacher("kdc/gemma3-270m", max_retries=0, timeout=300, sampling={"temperature": 0.7, "max_tokens": 256})
    messages = [{"role": "system", "content": "You write training data."},
                {"role": "user", "content": "Skill: writing > freeform > haiku\nTask description: Write a haiku.\n\n"
                 "Examples written by the expert (one JSON object per line):\n"
                 + json.dumps({"question": "Write a haiku about rain.", "answer": "Rain on the roof\nsoft drums"
                               " in the dark\nmorning comes"}) + "\n"
                 + json.dumps({"question": "Write a haiku about a cat.", "answer": "Grey cat on the sill\n"
                               "watching the sparrows\nnot moving at all"}) + "\n"}]
    done = asyncio.run(teacher.complete(messages, response_format("freeform_skill"), seed=3))
    record = json.loads(done.text)
    Draft202012Validator(response_schema("freeform_skill")).validate(record)
    assert done.model == "kdc/gemma3-270m" and done.completion_tokens > 5 and done.cost_usd in (None, 0.0)


@pytest.mark.slow
def test_compile_with_the_embedded_default_teacher(tmp_path, example_taxonomy, offline, capsys, monkeypatch):
    from compiler.cli import main

    root = tmp_path / "tax"
    shutil.copytree(example_taxonomy / LEAF, root / LEAF)
    monkeypatch.setattr(sys, "argv", ["kdc", "compile", str(root), "--out", str(tmp_path / "out"),
                                      "--samples-per-node", "2", "--seed", "1"])
    with pytest.raises(SystemExit) as exc:
        main()
    _, err = capsys.readouterr()
    assert exc.value.code == 0, err
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    node = m["nodes"][LEAF]
    assert m["teacher"]["model"] == "kdc/gemma3-270m" and "llama-cpp-python" in m["versions"]
    assert node["accepted"] == 2 and node["attempts"] == 2 + sum(node["rejected"].values())
    validator = Draft202012Validator(response_schema("grounded_skill"))
    train = [json.loads(line) for line in (tmp_path / "out" / node["files"]["train"]).read_text().splitlines()]
    assert len(train) == 2
    for sample in train:
        rec = {k: v for k, v in sample["record"].items()}
        validator.validate(rec)
        assert sample["metadata"]["teacher"]["model"] == "kdc/gemma3-270m"
        assert sample["metadata"]["usage"]["completion_tokens"] > 0


def test_few_shot_prompt_recasts_the_chat_prompt_for_a_base_model(example_taxonomy):
    from compiler.config import load_config
    from compiler.llm.fewshot import few_shot_prompt
    from compiler.compile.plan import make_plan, task_for
    from compiler.compile.prompts import Prompts
    from compiler.taxonomy.tree import load_taxonomy

    cfg = load_config(example_taxonomy, None, {})
    plans = {lp.node_id: lp for lp in make_plan(load_taxonomy(example_taxonomy), cfg)}
    for node_id, keys in ((LEAF, ["context", "question", "reasoning", "answer"]),
                          ("knowledge/science/astronomy/solar_system", ["question", "reasoning", "answer"])):
        lp = plans[node_id]
        task = task_for(lp, 0, cfg)
        prompt = few_shot_prompt(Prompts().render(task).messages, response_schema(lp.kind))
        assert prompt.endswith("\n") and "Examples written by" not in prompt
        lines = [json.loads(x) for x in prompt.splitlines() if x.startswith("{")]
        assert len(lines) == len(task.seeds_shown) and all(list(x) == keys for x in lines)
        assert [x["question"] for x in lines] == [lp.train_seeds[i].question for i in task.seeds_shown]
        if lp.kind == "knowledge":
            assert task.chunk.text in prompt and all(x["reasoning"][0].startswith("The document says")
                                                     for x in lines if len(x["answer"].split(". ")) == 1)
            # an example the excerpt answers quotes the excerpt's sentence; the others keep their answer
            flat = " ".join(task.chunk.text.split())
            quoted = [step[19:] for x in lines for step in x["reasoning"] if step[19:] in flat]
            assert quoted and all(step.startswith("The document says: ") for x in lines for step in x["reasoning"]
                                  if step[19:] not in x["answer"])
        else:  # a grounded example's working quotes its own context, never its answer
            for x in lines:
                flat = " ".join(x["context"].split())
                assert 1 <= len(x["reasoning"]) <= 2
                for step in x["reasoning"]:
                    assert step.startswith("The context says: ") and step[18:] in flat
                    assert step[18:] not in x["answer"]


def test_a_grounded_example_quotes_the_context_sentences_that_hold_its_answer():
    from compiler.llm.fewshot import _derive_reasoning

    context = ("Weekly sync, 3 March. Priya will send the revised budget to finance by Friday.\nThe team "
               "agreed to move the launch to April. Marco to book the venue for the\nlaunch party before "
               "15 March. No decision yet on the logo.")
    answer = "Priya: send the revised budget to finance (Friday)\nMarco: book the venue (before 15 March)"
    assert _derive_reasoning(answer, "Action items?", "context", context) == [
        "The context says: Priya will send the revised budget to finance by Friday.",
        "The context says: Marco to book the venue for the launch party before 15 March."]
    # nothing of the answer in the context (a single shared word is not support): the old working
    assert _derive_reasoning("Lena: draft the FAQ", "Action items?", "context", context) == [
        "The context says: Lena: draft the FAQ"]
    assert _derive_reasoning("One. Two.", "Q?", None) == ["One."]


def test_grammar_is_accepted_by_llama_cpp_and_forbids_raw_newlines():
    from llama_cpp import LlamaGrammar

    from compiler.llm.fewshot import grammar_for

    for kind in ("freeform_skill", "grounded_skill", "knowledge"):
        gbnf = grammar_for(response_schema(kind))
        LlamaGrammar.from_string(gbnf, verbose=False)
        assert gbnf.splitlines()[0].startswith('root ::= "{"')
        assert ("kv-context" in gbnf) == (kind == "grounded_skill")
    assert r'char ::= [^"\\\x00-\x1F\x7F]' in grammar_for(response_schema("knowledge"))
    # an invented context must be long enough to hold what the answer extracts; other strings are free
    grounded = grammar_for(response_schema("grounded_skill"))
    assert 'kv-context ::= "\\"context\\"" ws ":" ws "\\"" char{160,} "\\""' in grounded
    assert 'kv-answer ::= "\\"answer\\"" ws ":" ws string' in grounded


def test_the_thread_picker_keeps_the_faster_count_and_probes_the_other_ever_more_rarely():
    """llama.cpp's spinning threads decode faster with both cores on a quiet machine and far slower
    beside other work: the count follows the measured rate window by window, not a guess; a
    losing probe stops within a token or two, and one late token does not end a faster one."""
    from compiler.llm.threads import ThreadPicker

    p = ThreadPicker(cores=2)
    assert p.options == [1, 2] and p.best() == 1 and not p.too_slow(1, 99.0)  # the safe count first
    assert p.window(1, 16, 1.0) == 2 and p.probing  # 16 tok/s; then a probe of two threads
    # SLOWER x (tokens + SLACK) at the best rate: 1.25 x 3 / 16 s after one token
    assert not p.too_slow(1, 0.23) and p.too_slow(1, 0.24)
    assert not p.too_slow(4, 3 / 32 + 0.25)  # three tokens at 32 tok/s and one at 4 tok/s: goes on
    assert p.too_slow(2, 0.4)  # two tokens at a third of the rate: stops
    speeds = {1: 16.0, 2: 4.0}  # a busy machine
    n, seen = 2, []
    for _ in range(300):
        seen.append(n)
        tokens = 1 if n == 2 else 16  # the probe stopped at its first (slow) token
        n = p.window(n, tokens, tokens / speeds[n])
    probes = [i for i, k in enumerate(seen) if k == 2]
    gaps = [b - a for a, b in zip(probes, probes[1:])]
    assert gaps == sorted(gaps) and gaps[-1] == p.MAX_GAP + 1 and len(probes) < 12  # ever rarer, capped
    speeds = {1: 16.0, 2: 40.0}  # the machine went quiet: the next probe wins and two threads stay
    seen = []
    for _ in range(p.MAX_GAP + 40):
        seen.append(n)
        n = p.window(n, 16, 16 / speeds[n])
    assert p.best() == 2 and seen[-40:].count(2) >= 36
    fixed = ThreadPicker(fixed=3, cores=2)
    assert fixed.options == [3] and {fixed.window(3, 16, 1.0) for _ in range(9)} == {3}
    assert ThreadPicker(cores=1).options == [1]


def test_every_generation_runs_on_the_handlers_own_thread_whichever_thread_asks(monkeypatch):
    """litellm calls the provider from any of its workers; llama.cpp's OpenMP keeps a team of
    threads per calling thread, and alternating callers halved the decode speed. So the handler
    runs the model on one thread of its own, the same one for every caller."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from compiler.llm import embedded

    seen = []
    monkeypatch.setattr(embedded._Handler, "_generate",
                        lambda self, messages, params: seen.append(threading.current_thread()) or {"text": "{}"})
    handler = embedded._Handler()
    callers = [ThreadPoolExecutor(1) for _ in range(3)]
    for i in range(9):
        assert callers[i % 3].submit(handler.generate, [], {}).result() == {"text": "{}"}
    assert len(set(seen)) == 1 and seen[0].name.startswith("kdc-llama")
    assert seen[0] not in {f.submit(threading.current_thread).result() for f in callers}


def test_prompts_are_evaluated_at_the_count_their_own_picker_measures_first_all_threads(monkeypatch):
    """A prompt is evaluated in batches, compute-bound (two threads ran it 1.4-1.9x faster than one
    here), so it is not held to the decode picker's count: its own picker starts at every thread,
    times each prompt with llama.cpp's counters and probes the other count like the decode picker."""
    from compiler.llm import embedded
    from compiler.llm.teacher import response_schema

    monkeypatch.delenv("KDC_EMBEDDED_THREADS", raising=False)
    handler = embedded._Handler()
    options = handler.prompt_threads.options
    assert options == sorted(options, reverse=True) and handler.prompt_threads.next == options[0]
    schema = response_schema("freeform_skill", reasoning=False)
    for i, topic in enumerate(("rain on a tin roof", "a cat asleep on a warm windowsill")):
        lines = "\n".join(json.dumps({"question": f"Write a haiku about {t}.", "answer": "Soft words\nfall"})
                          for t in (topic, "the sea", "snow", "a lamp", "old shoes"))
        messages = [{"role": "user", "content": f"Skill: writing > haiku\nTask description: Write a haiku.\n{lines}\n"}]
        out = handler.generate(messages, {"response_format": {"json_schema": {"schema": schema}},
                                          "max_tokens": 8, "seed": i})
        assert out["prompt_tokens"] >= embedded.PROMPT_WINDOW_MIN
        assert set(handler.prompt_threads.rate) == set(options[:i + 1])  # first all threads, then a probe
        assert all(rate > 0 for rate in handler.prompt_threads.rate.values())
    handler.close()

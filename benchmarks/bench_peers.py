#!/usr/bin/env python3
"""kdc against its peers (Bespoke Curator, distilabel) and a bare aiohttp client, same teacher.

Every tool is asked the same ~N structured generations (the prompts and JSON schema kdc sends,
dumped by benchmarks/peers/dump_prompts.py) against the project's loopback teacher
(tests/teacher_server.py, a fresh server per run) at the same concurrency, whole process from
start to exit, the tools alternating within each repetition. Per run:
  accepted/s   samples kept (kdc: past every gate; peers: schema-valid answers) / wall s
  in flight    the server's time-weighted mean of requests in flight (GET /v1/stats), first
               arrival to last answer: what the teacher saw, not what a client claims
  CPU s        the child's rusage (user+sys, its children included: kdc's workers, git)
  wall s       spawn to exit
  start-up     spawn to the first request's arrival at the server; wrap-up: the server's last
               answer to exit (both on the server's clock: what kdc reports of itself is not used)
and for kdc its phase profile (`kdc compile --profile`): import, config, load, setup, validate (the
wait for the verdict), plan, generation (first request, last answer, gating), writing, card,
report, exit.

    python benchmarks/bench_peers.py                       # all tools, 1,000 samples, 3 reps
    python benchmarks/bench_peers.py --tools kdc,aiohttp --reps 5 --json out.json
    python benchmarks/bench_peers.py --growth              # kdc at 10k and 100k samples, 20 ms

The peers are installed on first use into build/peer-venvs/<tool> from the package index
(pinned: PEERS below). Caveats: the loopback teacher answers in fixed latency with tiny JSON, so
this measures the client's own request path, not a model; kdc does more per sample (gates, dedup,
provenance, mixes, card, report) than either peer; kdc runs with --no-judge (a judge doubles the
requests; the peers have none) unless --judge is given.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS_DIR = ROOT / "benchmarks" / "peers"
VENVS = ROOT / "build" / "peer-venvs"
PEERS = {"curator": ["bespokelabs-curator==0.1.31"],
         "distilabel": ["distilabel[openai]==1.5.3", "requests"]}  # 1.5.3 imports requests without requiring it
ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
       "TELEMETRY_ENABLED": "False", "POSTHOG_DISABLED": "1", "DO_NOT_TRACK": "1", "OPENAI_API_KEY": "sk-bench"}
sys.path.insert(0, str(ROOT / "benchmarks"))


# ------------------------------------------------------------------------------- set-up
def peer_python(tool: str) -> Path:
    """The peer's venv interpreter, installing the pinned package on first use."""
    venv = VENVS / tool
    marker = venv / ("installed-" + "+".join(PEERS[tool]).replace("/", "_"))
    py = venv / "bin" / "python"
    if not marker.exists():
        print(f"installing {' '.join(PEERS[tool])} into {venv} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *PEERS[tool], "aiohttp"], check=True)
        marker.write_text("ok\n")
    return py


def compile_kdc() -> None:
    """kdc's own modules byte-compiled, as pip leaves the peers' (and any installed package's):
    an editable checkout under PYTHONDONTWRITEBYTECODE=1 would otherwise compile ~110 modules
    from source on every run, ~60-80 ms of start-up no installed kdc pays."""
    import compileall

    compileall.compile_dir(str(ROOT / "compiler"), quiet=1)


def make_inputs(work: Path, samples: int, leaves: int) -> tuple[Path, Path, int]:
    """A skills taxonomy of `leaves` leaves and the requests kdc would send for it."""
    from bench_compile import make_taxonomy

    tax = work / "taxonomy"
    make_taxonomy(tax, leaves)
    prompts = work / "prompts.jsonl"
    per_node = max(1, samples // leaves)
    subprocess.run([sys.executable, str(PEERS_DIR / "dump_prompts.py"), str(tax), str(per_node), str(prompts)],
                   env=_env(), capture_output=True, text=True, check=True)
    return tax, prompts, per_node


def _env() -> dict[str, str]:
    return {**os.environ, **ENV, "PYTHONPATH": str(ROOT)}


class Teacher:
    """tests/teacher_server.py in its own process (its CPU is not counted)."""

    def __init__(self, latency: float, capacity: int):
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "teacher_server.py"), "--port", "0",
                                      "--latency", str(latency), "--capacity", str(capacity)],
                                     stdout=subprocess.PIPE, text=True, env=_env())
        self.base = f"http://127.0.0.1:{int(self.proc.stdout.readline().split()[1])}/v1"

    def stats(self) -> dict:
        with urllib.request.urlopen(self.base + "/stats", timeout=10) as r:
            return json.loads(r.read())

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


# ------------------------------------------------------------------------------- one run
def kdc_command(tax: Path, out: Path, base: str, per_node: int, concurrency: int, judge: bool,
                profile: Path) -> list[str]:
    cmd = [sys.executable, "-m", "compiler", "compile", str(tax), "--out", str(out), "--teacher",
           "hosted_vllm/teacher-bench", "--api-base", base, "--concurrency", str(concurrency),
           "--samples-per-node", str(per_node), "--quiet", "--json", "--profile", str(profile)]
    if not judge:
        cmd.append("--no-judge")
    if _has_transport():
        cmd += ["--transport", "http"]
    return cmd


def _has_transport() -> bool:
    """`--transport http` only where this checkout's kdc has it (the direct HTTP client)."""
    if not hasattr(_has_transport, "v"):
        h = subprocess.run([sys.executable, "-m", "compiler", "compile", "--help"], capture_output=True, text=True,
                           env=_env())
        _has_transport.v = "--transport" in h.stdout
    return _has_transport.v


def run_tool(tool: str, work: Path, tax: Path, prompts: Path, per_node: int, args) -> dict:
    teacher = Teacher(args.latency, args.capacity)
    result, profile = work / f"{tool}.result.json", work / f"{tool}.profile.json"
    out = work / f"{tool}.out"
    shutil.rmtree(out, ignore_errors=True)
    for p in (result, profile):
        p.unlink(missing_ok=True)
    try:
        if tool == "kdc":
            cmd = kdc_command(tax, out, teacher.base, per_node, args.concurrency, args.judge, profile)
        else:
            py = sys.executable if tool == "aiohttp" else str(peer_python(tool))
            cmd = [py, str(PEERS_DIR / f"run_{tool}.py"), str(prompts), teacher.base, str(args.concurrency), str(result)]
        env = {**_env(), "CURATOR_CACHE_DIR": str(work / "curator-cache"), "DISTILABEL_CACHE_DIR":
               str(work / "distilabel-cache"), "HOME": str(work / "home")}
        for d in ("curator-cache", "distilabel-cache"):
            shutil.rmtree(work / d, ignore_errors=True)
        (work / "home").mkdir(exist_ok=True)
        if tool in PEERS:  # offline: tiktoken's encodings from the copy litellm bundles, not a download
            env["TIKTOKEN_CACHE_DIR"] = next(map(str, (VENVS / tool).glob(
                "lib/python*/site-packages/litellm/litellm_core_utils/tokenizers")), "")
        _child_cpu()
        t0 = time.time()
        proc = subprocess.Popen(cmd, env=env, cwd=str(work), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        stdout, stderr = proc.communicate()
        wall = time.time() - t0
        cpu = _child_cpu()  # before the server is reaped
        stats = teacher.stats()
    finally:
        teacher.close()
    row = {"tool": tool, "wall_s": round(wall, 2), "in_flight": round(stats["mean_in_flight"], 1),
           "requests": stats["requests"], "busy_s": round(stats["busy_s"], 2), "cpu_s": round(cpu, 2),
           **_at_server(stats, t0, t0 + wall)}
    if proc.returncode != 0:
        row["error"] = (stderr.decode(errors="replace")[-800:] or stdout.decode(errors="replace")[-800:])
        row["accepted"] = 0
    elif tool == "kdc":
        row["accepted"] = json.loads(stdout)["accepted"]
        row["profile"] = _phases(json.loads(profile.read_text()), t0, t0 + wall)
    else:
        row["accepted"] = json.loads(result.read_text())["accepted"]
    row["accepted_per_s"] = round(row["accepted"] / wall, 1)
    return row


_CPU_BEFORE = [0.0]


def _child_cpu() -> float:
    """CPU of the child just reaped (user+sys, its own reaped children included): the growth of
    this process's RUSAGE_CHILDREN across the run (the only child reaped in between)."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    now = ru.ru_utime + ru.ru_stime
    used, _CPU_BEFORE[0] = now - _CPU_BEFORE[0], now
    return used


def _at_server(stats: dict, spawned: float, exited: float) -> dict:
    """Start-up and wrap-up as the teacher saw them: spawn to the first request's arrival, the
    last answer sent to the client's exit (the same clock for every tool)."""
    first, last = stats.get("first_arrival_epoch"), stats.get("last_done_epoch")
    return {"startup_s": round(first - spawned, 2) if first else None,
            "wrapup_s": round(exited - last, 2) if last else None}


def _phases(p: dict, spawned: float, exited: float) -> dict:
    """kdc's profile against this process's clock: start-up to the first request, wrap-up after
    the last answer (including the interpreter's exit, which kdc cannot time itself)."""
    at = p["at"]
    ph = {k: round(v, 2) for k, v in p["phases"].items()}
    if p.get("process_started") is None:
        ph["import"] = round(at["cli"] - spawned, 2)
    ph["exit"] = round(exited - max(at.values()), 2)
    first = p["process_started"] + p["first_request_s"] if p.get("first_request_s") is not None else None
    last = p["process_started"] + p["last_answer_s"] if p.get("last_answer_s") is not None else None
    return {"phases": ph, "gating_s": p["gating_s"],
            "to_first_request_s": round(first - spawned, 2) if first else None,
            "after_last_answer_s": round(exited - last, 2) if last else None}


# ------------------------------------------------------------------------------- tables
def _med(rows: list[dict], key: str) -> float:
    vals = [r[key] for r in rows if r.get(key) is not None]
    if not vals:
        return float("nan")
    m = statistics.median(vals)
    return int(m) if m == int(m) else round(m, 2)


def print_table(rows: list[dict], args, load: tuple[float, ...]) -> None:
    print(f"\n`python benchmarks/bench_peers.py --tools {args.tools} --samples {args.samples} --reps {args.reps} "
          f"--latency {args.latency} --capacity {args.capacity}`  (load average before {load[0]:.2f}, "
          f"after {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs; kdc transport: "
          f"{'http' if _has_transport() else 'litellm'})\n")
    print("| tool | accepted samples/s (median) | in flight at the server (of %d) | client CPU s | wall s | "
          "start-up s (share) | wrap-up s (share) | accepted | requests |" % args.capacity)
    print("|---|---|---|---|---|---|---|---|---|")
    for tool in args.tools.split(","):
        rs = [r for r in rows if r["tool"] == tool]
        errs = [r for r in rs if "error" in r]
        walls = [r["wall_s"] for r in rs]
        print(f"| {tool} | {_med(rs, 'accepted_per_s')} | {_med(rs, 'in_flight')} | {_med(rs, 'cpu_s')} | "
              f"{_med(rs, 'wall_s')} | {_share(rs, walls, 'startup_s')} | {_share(rs, walls, 'wrapup_s')} | "
              f"{_med(rs, 'accepted')} | {_med(rs, 'requests')} |"
              + (f" {len(errs)} failed run(s)" if errs else ""))
    print("\nstart-up: spawn to the first request's arrival at the teacher; wrap-up: the teacher's last "
          "answer to the process's exit (the teacher's clock, the same for every tool)")
    prof = [r["profile"] for r in rows if r["tool"] == "kdc" and "profile" in r]
    if prof:
        print("\nkdc phase profile (median s over %d runs):\n" % len(prof))
        names = list(prof[0]["phases"])
        print("| " + " | ".join(names + ["to first request", "after last answer"]
                                + [f"gating: {k}" for k in prof[0]["gating_s"]]) + " |")
        print("|" + "---|" * (len(names) + 2 + len(prof[0]["gating_s"])))
        cells = [statistics.median(p["phases"].get(n, 0.0) for p in prof) for n in names]
        cells += [statistics.median(p[k] or 0.0 for p in prof) for k in ("to_first_request_s", "after_last_answer_s")]
        cells += [statistics.median(p["gating_s"].get(k, 0.0) for p in prof) for k in prof[0]["gating_s"]]
        print("| " + " | ".join(f"{c:.2f}" for c in cells) + " |")
        walls = [r["wall_s"] for r in rows if r["tool"] == "kdc" and "profile" in r]
        print(f"\nkdc's own stamps (its profile, not the teacher's clock): start-up (spawn to first request "
              f"sent) {_share(prof, walls, 'to_first_request_s')}, wrap-up (last answer read to exit) "
              f"{_share(prof, walls, 'after_last_answer_s')} of the wall time (median over runs)")
    for r in rows:
        if "error" in r:
            print(f"\n{r['tool']} failed:\n{r['error']}", file=sys.stderr)


def _share(prof: list[dict], walls: list[float], key: str) -> str:
    """'1.23 s (12.3 %)': the median seconds of a profile figure and its median share of the wall."""
    secs = [p[key] for p in prof if p.get(key) is not None]
    shares = [p[key] / w for p, w in zip(prof, walls) if p.get(key) is not None and w]
    if not secs:
        return "n/a"
    return f"{statistics.median(secs):.2f} s ({100 * statistics.median(shares):.1f} %)"


def growth(args) -> list[dict]:
    """kdc alone at each size (20 ms teacher): time and peak RSS per accepted sample, and the slope."""
    rows = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory(prefix="kdc-growth-") as tmp:
            work = Path(tmp)
            tax, prompts, per_node = make_inputs(work, n, args.leaves)
            teacher = Teacher(args.latency, args.capacity)
            try:
                profile = work / "profile.json"
                cmd = kdc_command(tax, work / "out", teacher.base, per_node, args.concurrency, args.judge, profile)
                _child_cpu()
                t0 = time.time()
                out = subprocess.run(["/usr/bin/time", "-f", "MAXRSS_KB %M", *cmd], env=_env(), capture_output=True,
                                     text=True)
                wall = time.time() - t0
                cpu = _child_cpu()
                stats = teacher.stats()
            finally:
                teacher.close()
            rss_kb = int(next(l.split()[1] for l in out.stderr.splitlines() if l.startswith("MAXRSS_KB")))
            accepted = json.loads(out.stdout)["accepted"] if out.returncode == 0 else 0
            if out.returncode != 0:
                print(out.stderr[-1500:], file=sys.stderr)
            rows.append({"samples": n, "accepted": accepted, "wall_s": round(wall, 1), "peak_rss_mb": round(rss_kb / 1024, 1),
                         "ms_per_sample": round(1000 * wall / max(1, accepted), 3),
                         "kb_rss_per_sample": round(rss_kb / max(1, accepted), 2),
                         "in_flight": round(stats["mean_in_flight"], 1), "cpu_s": round(cpu, 1),
                         **_at_server(stats, t0, t0 + wall),
                         "profile": _phases(json.loads(profile.read_text()), t0, t0 + wall) if profile.exists() else None})
            print(json.dumps(rows[-1]), file=sys.stderr)
    print(f"\n`python benchmarks/bench_peers.py --growth --sizes {' '.join(map(str, args.sizes))} --latency "
          f"{args.latency}`  (load average {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs)\n")
    print("| samples | accepted | wall s | ms/sample | peak RSS MB | KB RSS/sample | in flight | CPU s | "
          "start-up s (share) | wrap-up s (share) | writing s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        p = [r["profile"]] if r.get("profile") else []
        print(f"| {r['samples']} | {r['accepted']} | {r['wall_s']} | {r['ms_per_sample']} | {r['peak_rss_mb']} | "
              f"{r['kb_rss_per_sample']} | {r['in_flight']} | {r['cpu_s']} | "
              f"{_share([r], [r['wall_s']], 'startup_s')} | {_share([r], [r['wall_s']], 'wrapup_s')} | "
              f"{p[0]['phases'].get('writing', 'n/a') if p else 'n/a'} |")
    for a, b in zip(rows, rows[1:]):
        dn = max(1, b["accepted"] - a["accepted"])
        print(f"\nslope {a['samples']} -> {b['samples']}: {1000 * (b['wall_s'] - a['wall_s']) / dn:.3f} ms and "
              f"{1024 * (b['peak_rss_mb'] - a['peak_rss_mb']) / dn:.2f} KB RSS per extra accepted sample")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tools", default="kdc,curator,distilabel,aiohttp", help="comma-separated, run in this order")
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--latency", type=float, default=None, help="teacher latency s (0.2; 0.02 with --growth)")
    ap.add_argument("--capacity", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--leaves", type=int, default=20)
    ap.add_argument("--judge", action="store_true", help="kdc with its default judge (the teacher judging itself)")
    ap.add_argument("--growth", action="store_true", help="kdc alone at --sizes samples: cost of growth")
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--json", type=Path, help="also write every run as JSON here")
    args = ap.parse_args()
    if args.latency is None:
        args.latency = 0.02 if args.growth else 0.2
    compile_kdc()
    if args.growth:
        rows = growth(args)
    else:
        tools = args.tools.split(",")
        for t in tools:
            if t in PEERS:
                peer_python(t)
        load = os.getloadavg()
        rows = []
        with tempfile.TemporaryDirectory(prefix="kdc-peers-") as tmp:
            work = Path(tmp)
            tax, prompts, per_node = make_inputs(work, args.samples, args.leaves)
            for rep in range(args.reps):
                for tool in tools:
                    row = run_tool(tool, work, tax, prompts, per_node, args)
                    row["rep"] = rep
                    rows.append(row)
                    print(json.dumps({k: v for k, v in row.items() if k != "error"}), file=sys.stderr)
        print_table(rows, args, load)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Benchmark the LLM judge gate: does it keep up with generation?

A loopback teacher and a loopback judge (tests/teacher_server.py, each in its own process, each
200 ms latency and capacity 32) and `--concurrency 32`. A plain compile and a judged compile
(`--judge`, gates.judge_concurrency defaulting to --concurrency) of the same synthetic taxonomy,
each into a fresh --out (no cache). Reported: the judge server's time-weighted mean of requests in
flight (target >= 75 % of 32) and judged wall time / plain wall time (target <= 1.3x).
The judge can only be as busy as answers arrive: its mean in flight is at most the teacher's
throughput times the judge's latency, so on a CPU-starved machine (see load_avg) both shares fall
together; the teacher's own mean in flight in each run is reported for that reason.

usage: bench_judge.py [--leaves 20] [--samples 30] [--latency 0.2] [--capacity 32] [--concurrency 32]
                      [--transport auto|http|litellm] [--repeat N]
With --repeat the plain and judged runs alternate N times (fresh servers each) and medians are shown.
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
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("OPENAI_API_KEY", "sk-bench-not-a-secret")

from bench_compile import make_taxonomy  # noqa: E402


def server(args, *extra: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "teacher_server.py"), "--latency",
                             str(args.latency), "--capacity", str(args.capacity), *extra],
                            stdout=subprocess.PIPE, text=True)
    return proc, f"http://127.0.0.1:{int(proc.stdout.readline().split()[1])}/v1"


def stats(base: str) -> dict:
    return json.loads(urllib.request.urlopen(base + "/stats").read())


def compile_once(args, work: Path, name: str, teacher: str, judge: str | None, leaves: int, samples: int) -> dict:
    from compiler.compile.build import compile_taxonomy
    from compiler.config import load_config

    cli = {"out": work / name, "teacher": "openai/teacher-bench", "api_base": (teacher,),
           "concurrency": args.concurrency, "samples_per_node": samples, "seed": 1, "max_retries": 4}
    if args.teacher_workers is not None:
        cli["teacher_workers"] = args.teacher_workers
    cli["transport"] = args.transport
    cli["judge"] = ""  # plain: no judge at all (not even the teacher judging itself, kdc's default)
    if judge:
        cli["judge"] = "openai/judge-bench"
        (work / f"{name}.yaml").write_text(f"gates: {{judge_api_base: '{judge}'}}\n")
    cfg = load_config(work / f"tax{leaves}", work / f"{name}.yaml" if judge else None, cli)
    w0 = time.monotonic()
    result = compile_taxonomy(cfg)
    t = result.manifest["totals"]
    return {"wall_s": round(time.monotonic() - w0, 2), "generation_s": t["seconds"], "accepted": t["accepted"],
            "teacher_calls": t["teacher_calls"], "judge_calls": result.manifest["judge"]["calls"],
            "rejected": t["rejected"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--leaves", type=int, default=20)
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--capacity", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--teacher-workers", type=int, default=None, help="default: kdc's automatic rule")
    ap.add_argument("--transport", choices=["auto", "http", "litellm"], default="auto")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kdc-bench-judge-"))
    procs = []
    try:
        make_taxonomy(work / "tax1", 1)
        make_taxonomy(work / f"tax{args.leaves}", args.leaves)
        tproc, teacher = server(args)
        wproc, warm_judge = server(args, "--judge")
        procs += [tproc, wproc]
        compile_once(args, work, "warm", teacher, warm_judge, 1, 4)  # imports, connections: paid once
        rounds = []
        for r in range(args.repeat):
            # fresh servers per measured run: each one's busy period is that run only
            pproc, teacher = server(args)
            procs.append(pproc)
            plain = compile_once(args, work, f"plain{r}", teacher, None, args.leaves, args.samples)
            plain["teacher_server_mean_in_flight"] = round(stats(teacher)["mean_in_flight"], 2)
            tproc2, teacher = server(args)
            jproc, judge = server(args, "--judge")
            procs += [tproc2, jproc]
            judged = compile_once(args, work, f"judged{r}", teacher, judge, args.leaves, args.samples)
            judged["teacher_server_mean_in_flight"] = round(stats(teacher)["mean_in_flight"], 2)
            j1 = stats(judge)
            mean = j1["mean_in_flight"]
            rounds.append({"plain": plain, "judged": judged, "judge_server_mean_in_flight": round(mean, 2),
                           "judge_server_max_in_flight": j1["max_in_flight"],
                           "judge_in_flight_share": round(mean / args.concurrency, 3),
                           "judged_over_plain_wall": round(judged["wall_s"] / plain["wall_s"], 3)})
        report = {"command": "python benchmarks/bench_judge.py " + " ".join(sys.argv[1:]),
                  "machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg()},
                  "latency_s": args.latency, "capacity": args.capacity, "concurrency": args.concurrency,
                  "transport": args.transport, **rounds[len(rounds) // 2]}
        if len(rounds) > 1:
            for key in ("judge_in_flight_share", "judged_over_plain_wall"):
                report[f"median_{key}"] = statistics.median(x[key] for x in rounds)
                report[f"all_{key}"] = [x[key] for x in rounds]
        print(json.dumps(report, indent=2))
    finally:
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

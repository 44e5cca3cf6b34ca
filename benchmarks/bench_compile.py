#!/usr/bin/env python3
"""Benchmark `kdc compile`.

1. Throughput against the test teacher server (tests/teacher_server.py) run in a separate
   process with 200 ms latency and capacity 32, at --concurrency 32: the server's time-weighted
   mean number of requests in flight over the run (first arrival to last answer), and CPU time
   per accepted sample, split into kdc's main process (plan, prompts, cache, gates, writing) and
   the teacher worker processes (litellm's client work); the teacher's own CPU is in the server
   process and not counted. A warm-up compile first pays the one-time imports (reported as
   warm_up_cpu_s). A second, cached run gives the CPU of kdc's pipeline without any transport.
2. The transport floor against the same server: bare litellm.acompletion calls and bare aiohttp
   posts at the same concurrency (no kdc at all), to tell kdc's cost from the client library's.
3. The embedded teacher (Gemma 3 270M on llama.cpp): completion tokens/s and accepted samples/min
   on a small compile of two example leaves.

usage: bench_compile.py [--leaves 20] [--samples 50] [--teacher-model openai/teacher-bench]
                        [--teacher-workers N] [--embedded-samples 2] [--skip-server] [--skip-floor]
                        [--skip-embedded] [--json out.json]
(`--teacher-model hosted_vllm/teacher-bench` takes litellm's lean route to the same server.)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def make_taxonomy(root: Path, leaves: int) -> None:
    """`leaves` freeform skill leaves with 6 seeds each (distinct topics)."""
    for i in range(leaves):
        leaf = root / "compositional_skills" / "bench" / f"skill_{i:03d}"
        leaf.mkdir(parents=True)
        seeds = "".join(f"  - question: How would you explain topic {i} detail {j} to a colleague?\n"
                        f"    answer: Topic {i} detail {j} is explained with a short example and a summary.\n"
                        for j in range(6))
        (leaf / "qna.yaml").write_text(f"version: 3\ncreated_by: bench\ntask_description: Explain topic {i} "
                                       f"clearly and briefly.\nseed_examples:\n{seeds}", encoding="utf-8")


def cpu() -> float:
    """CPU seconds of this process and its finished children (teacher workers, git, validate)."""
    return sum(cpu_split())


def cpu_split() -> tuple[float, float]:
    self_ = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return self_.ru_utime + self_.ru_stime, kids.ru_utime + kids.ru_stime


def start_server(args) -> tuple[subprocess.Popen, int]:
    server = subprocess.Popen([sys.executable, str(ROOT / "tests" / "teacher_server.py"), "--latency",
                               str(args.latency), "--capacity", str(args.capacity)],
                              stdout=subprocess.PIPE, text=True)
    return server, int(server.stdout.readline().split()[1])


def proc_cpu(pid: int) -> float:
    """CPU seconds used so far by another process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def warm_up(args, work: Path) -> float:
    """One small compile on its own server, so that the measured run is the steady state: the
    one-time imports (litellm, datasets, datasketch/scipy, networkx) are paid here. Returns the
    CPU seconds it took (a fresh `kdc compile` pays them once per run)."""
    from compiler.compile.build import compile_taxonomy
    from compiler.config import load_config

    make_taxonomy(work / "warm", 1)
    server, port = start_server(args)
    try:
        c0 = cpu()
        compile_taxonomy(load_config(work / "warm", None, {
            "out": work / "warm-out", "teacher": args.teacher_model, "api_base": (f"http://127.0.0.1:{port}/v1",),
            "samples_per_node": 2, "teacher_workers": 1}))
        return cpu() - c0
    finally:
        server.kill()
        server.wait()


def bench_server(args) -> dict:
    from compiler.compile.build import compile_taxonomy
    from compiler.config import load_config

    work = Path(tempfile.mkdtemp(prefix="kdc-bench-"))
    os.environ.setdefault("OPENAI_API_KEY", "sk-bench-not-a-secret")
    c0 = cpu()
    import compiler.compile.build  # noqa: F401
    warm_cpu = warm_up(args, work) + cpu() - c0
    make_taxonomy(work / "tax", args.leaves)
    server, port = start_server(args)
    try:
        cli = {"out": work / "out", "teacher": args.teacher_model, "api_base": (f"http://127.0.0.1:{port}/v1",),
               "concurrency": args.concurrency, "samples_per_node": args.samples, "seed": 1, "max_retries": 4,
               "teacher_workers": args.teacher_workers}
        runs = {}
        for name in ("cold", "cached"):
            cfg = load_config(work / "tax", None, cli)
            (p0, k0), w0, s0 = cpu_split(), time.monotonic(), proc_cpu(server.pid)
            result = compile_taxonomy(cfg)
            (p1, k1), w1, s1 = cpu_split(), time.monotonic(), proc_cpu(server.pid)
            c0, c1 = p0 + k0, p1 + k1
            stats = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/stats").read())
            t = result.manifest["totals"]
            runs[name] = {"accepted": t["accepted"], "teacher_calls": t["teacher_calls"], "retries": t["retries"],
                          "wall_s": round(w1 - w0, 2), "generation_s": t["seconds"], "cpu_s": round(c1 - c0, 2),
                          "kdc_mean_in_flight": t["mean_in_flight"],
                          "cpu_ms_per_accepted": round(1000 * (c1 - c0) / max(1, t["accepted"]), 2),
                          "cpu_ms_per_accepted_main_process": round(1000 * (p1 - p0) / max(1, t["accepted"]), 2),
                          "cpu_ms_per_accepted_teacher_workers": round(1000 * (k1 - k0) / max(1, t["accepted"]), 2),
                          "teacher_workers": t.get("teacher_workers")}
            if name == "cold":
                runs[name].update({"server_mean_in_flight": round(stats["mean_in_flight"], 2),
                                   "server_max_in_flight": stats["max_in_flight"],
                                   "mean_in_flight_share": round(stats["mean_in_flight"] / args.concurrency, 3),
                                   "server_busy_s": round(stats["busy_s"], 2),
                                   "server_cpu_ms_per_request": round(1000 * (s1 - s0) / max(1, stats["requests"]), 2),
                                   "server_status": stats["by_status"]})
        runs["warm_up_cpu_s"] = round(warm_cpu, 2)  # imports + one tiny compile, once per process
        return runs
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


def bench_transport_floor(args) -> dict:
    """Reference points against the same server: bare litellm.acompletion calls (what any litellm
    client pays, with no kdc at all) and bare aiohttp posts (what the server allows)."""
    import asyncio

    import aiohttp

    from compiler.llm.teacher import Teacher, response_format

    server = subprocess.Popen([sys.executable, str(ROOT / "tests" / "teacher_server.py"), "--latency",
                               str(args.latency), "--capacity", str(args.capacity)],
                              stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline().split()[1])
        base = f"http://127.0.0.1:{port}/v1"
        os.environ.setdefault("OPENAI_API_KEY", "sk-bench-not-a-secret")
        teacher = Teacher(args.teacher_model, api_bases=[base], concurrency=args.concurrency)  # registers prices
        lt = teacher._litellm
        messages = [{"role": "system", "content": "You write training data."},
                    {"role": "user", "content": "Explain topic words " * 120}]
        fmt = response_format("freeform_skill")
        n = args.floor_requests
        out = {}

        async def run(kind: str) -> None:
            sem = asyncio.Semaphore(args.concurrency)
            async with aiohttp.ClientSession() as session:
                async def one(i: int):
                    async with sem:
                        if kind == "litellm":
                            return await lt.acompletion(model=args.teacher_model, api_base=base, messages=messages,
                                                        response_format=fmt, seed=i, max_retries=0, timeout=30,
                                                        drop_params=True, api_key="sk-bench-not-a-secret")
                        async with session.post(base + "/chat/completions",
                                                json={"model": "x", "messages": messages, "seed": i}) as r:
                            return await r.json()
                await asyncio.gather(*(one(i) for i in range(n)))

        for kind in ("aiohttp", "litellm"):
            asyncio.run(run(kind))  # warm-up (lazy imports, connections), then the stats are reset
            before = json.loads(urllib.request.urlopen(base + "/stats").read())
            c0, w0 = cpu(), time.monotonic()
            asyncio.run(run(kind))
            c1, w1 = cpu(), time.monotonic()
            after = json.loads(urllib.request.urlopen(base + "/stats").read())
            # time-weighted mean over the measured run only
            area = after["mean_in_flight"] * after["busy_s"] - before["mean_in_flight"] * before["busy_s"]
            span = after["busy_s"] - before["busy_s"]
            out[kind] = {"requests": n, "wall_s": round(w1 - w0, 2), "cpu_ms_per_call": round(1000 * (c1 - c0) / n, 2),
                         "server_mean_in_flight_approx": round(area / max(span, 1e-9), 2)}
        return out
    finally:
        server.kill()
        server.wait()


def bench_embedded(args) -> dict:
    from compiler.compile.build import compile_taxonomy
    from compiler.config import load_config

    work = Path(tempfile.mkdtemp(prefix="kdc-bench-emb-"))
    try:
        leaves = ["compositional_skills/summarization/grounded/incident_report",
                  "knowledge/technology/version_control/git_internals"]
        for leaf in leaves:
            shutil.copytree(ROOT / "taxonomy" / leaf, work / "taxonomy" / leaf)
            q = work / "taxonomy" / leaf / "qna.yaml"
            q.write_text(q.read_text().replace("../build/doc-repos", str(ROOT / "build" / "doc-repos")))
        cfg = load_config(work / "taxonomy", None, {"out": work / "out", "samples_per_node": args.embedded_samples,
                                                    "seed": 3,
                                                    "allow_repos": [str(ROOT / "build" / "doc-repos")]})
        w0 = time.monotonic()
        result = compile_taxonomy(cfg)
        wall = time.monotonic() - w0
        t = result.manifest["totals"]
        gen = t["seconds"]
        return {"leaves": len(leaves), "accepted": t["accepted"], "teacher_calls": t["teacher_calls"],
                "completion_tokens": t["tokens"]["completion"], "prompt_tokens": t["tokens"]["prompt"],
                "generation_s": gen, "wall_s": round(wall, 1),
                "completion_tokens_per_s": round(t["tokens"]["completion"] / gen, 1),
                "requests_per_min": round(60 * t["teacher_calls"] / gen, 2),
                "accepted_samples_per_min": round(60 * t["accepted"] / gen, 2)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--leaves", type=int, default=20)
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--capacity", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--teacher-workers", type=int, default=None, help="default: kdc's auto (in-process below 128 in flight)")
    ap.add_argument("--teacher-model", default="openai/teacher-bench")
    ap.add_argument("--embedded-samples", type=int, default=2)
    ap.add_argument("--skip-embedded", action="store_true")
    ap.add_argument("--skip-server", action="store_true")
    ap.add_argument("--floor-requests", type=int, default=1000)
    ap.add_argument("--skip-floor", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    report: dict = {"machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg()}}
    if not args.skip_server:
        report["server"] = {"latency_s": args.latency, "capacity": args.capacity, "concurrency": args.concurrency,
                            "teacher": args.teacher_model, **bench_server(args)}
        print(json.dumps(report["server"], indent=2), flush=True)
    if not args.skip_floor:
        report["transport_floor"] = bench_transport_floor(args)
        print(json.dumps(report["transport_floor"], indent=2), flush=True)
    if not args.skip_embedded:
        report["embedded"] = bench_embedded(args)
        print(json.dumps(report["embedded"], indent=2), flush=True)
    report["machine"]["load_avg_end"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Client CPU per request: litellm's `acompletion` against a bare aiohttp POST, same loopback teacher.

Why it matters: at 32 requests in flight and 200 ms latency a teacher can answer 160 requests a
second; a client that spends 5 ms of CPU on each one needs 0.8 of a core just to keep up, and a
judged build (two calls per sample) is then CPU-bound on a 2-core machine whatever its concurrency
(issues 12 and 14). This measures the floor each path sets: CPU seconds of this process (threads
included) per request, the wall time and the import time of the client library.

    python benchmarks/bench_client_cpu.py                 # both paths, 600 requests each
    python benchmarks/bench_client_cpu.py --requests 2000 --latency 0.05

The teacher is tests/teacher_server.py in its own process (its CPU is not counted). Each path runs
in a fresh interpreter so that import times are cold.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = [{"role": "user", "content": "Write a question and answer about rivers. " * 20}]


async def _litellm(base: str, n: int, concurrency: int) -> None:
    import litellm

    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> str:
        async with sem:
            r = await litellm.acompletion(model="openai/bench", messages=MESSAGES, api_base=base, api_key="sk-bench",
                                          seed=i)
            return r.choices[0].message.content

    await asyncio.gather(*(one(i) for i in range(n)))


async def _aiohttp(base: str, n: int, concurrency: int) -> None:
    import aiohttp

    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def one(i: int) -> str:
            async with sem:
                async with session.post(base + "/chat/completions", headers={"Authorization": "Bearer sk-bench"},
                                        json={"model": "bench", "messages": MESSAGES, "seed": i}) as r:
                    return (await r.json())["choices"][0]["message"]["content"]

        await asyncio.gather(*(one(i) for i in range(n)))


def run_one(path: str, base: str, n: int, concurrency: int) -> dict:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    t0, c0 = time.perf_counter(), time.process_time()
    if path == "litellm":
        import litellm  # noqa: F401
    else:
        import aiohttp  # noqa: F401
    t1, c1 = time.perf_counter(), time.process_time()
    asyncio.run((_litellm if path == "litellm" else _aiohttp)(base, n, concurrency))
    t2, c2 = time.perf_counter(), time.process_time()
    return {"path": path, "import_s": round(t1 - t0, 2), "requests": n, "wall_s": round(t2 - t1, 2),
            "requests_per_s": round(n / (t2 - t1), 1), "cpu_ms_per_request": round(1000 * (c2 - c1) / n, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=600)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--one", nargs=2, metavar=("PATH", "BASE"), help=argparse.SUPPRESS)  # internal
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1], args.requests, args.concurrency)))
        return
    server = subprocess.Popen([sys.executable, str(ROOT / "tests" / "teacher_server.py"), "--latency",
                               str(args.latency), "--capacity", str(args.concurrency)], stdout=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{int(server.stdout.readline().split()[1])}/v1"
        print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs, latency {args.latency}s, "
              f"concurrency {args.concurrency}")
        for path in ("aiohttp", "litellm"):
            out = subprocess.run([sys.executable, __file__, "--one", path, base, "--requests", str(args.requests),
                                  "--concurrency", str(args.concurrency)], capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"  {r['path']:8} import {r['import_s']:5.2f} s   {r['requests']} requests in {r['wall_s']:6.2f} s "
                  f"({r['requests_per_s']:6.1f}/s)   client CPU {r['cpu_ms_per_request']:5.2f} ms/request")
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()

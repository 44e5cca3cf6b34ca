#!/usr/bin/env python3
"""Client CPU per request: litellm's `acompletion`, a bare aiohttp POST and kdc's own client
(`Teacher.complete` on the direct path, compiler/llm/httpclient.py, and on litellm), same loopback teacher.

Why it matters: at 32 requests in flight and 200 ms latency a teacher can answer 160 requests a
second; a client that spends 5 ms of CPU on each one needs 0.8 of a core just to keep up, and a
judged build (two calls per sample) is then CPU-bound on a 2-core machine whatever its concurrency
(issues 12 and 14). This measures the floor each path sets: CPU seconds of this process (threads
included) per request, the wall time and the import time of the client library.

    python benchmarks/bench_client_cpu.py                 # every path, 600 requests each
    python benchmarks/bench_client_cpu.py --requests 2000 --latency 0.05 --repeat 3
    python benchmarks/bench_client_cpu.py --paths kdc-http kdc-http-2w   # direct path, 0 vs 2 workers

Paths: aiohttp (the floor), litellm (bare acompletion), kdc-http / kdc-litellm (kdc's Teacher:
retries, semaphore, I/O loop, on either transport), kdc-http-2w (direct path in 2 forked workers;
their CPU is counted too). With --repeat the paths alternate and the medians are printed.

The teacher is tests/teacher_server.py in its own process (its CPU is not counted). Each path runs
in a fresh interpreter so that import times are cold.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
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


def _kdc_teacher(path: str, base: str, concurrency: int):
    sys.path.insert(0, str(ROOT))
    from compiler.llm.teacher import Teacher

    transport = "litellm" if path == "kdc-litellm" else "http"
    return Teacher("openai/bench", api_bases=[base], concurrency=concurrency, transport=transport,
                   workers=2 if path.endswith("-2w") else 1, max_retries=4)


async def _kdc(teacher, n: int) -> None:
    async def one(i: int) -> str:
        return (await teacher.complete(MESSAGES, None, seed=i)).text

    await asyncio.gather(*(one(i) for i in range(n)))


def _cpu() -> float:
    """CPU seconds of this process and its reaped children (the workers of kdc-http-2w)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def run_one(path: str, base: str, n: int, concurrency: int) -> dict:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("OPENAI_API_KEY", "sk-bench")
    t0, c0 = time.perf_counter(), _cpu()
    teacher = None
    if path == "litellm":
        import litellm  # noqa: F401
    elif path.startswith("kdc"):
        teacher = _kdc_teacher(path, base, concurrency)  # imports what that transport needs
        teacher.__enter__()
    else:
        import aiohttp  # noqa: F401
    t1, c1 = time.perf_counter(), _cpu()
    if teacher is not None:
        asyncio.run(_kdc(teacher, n))
        teacher.__exit__(None, None, None)  # reaps the workers: their CPU is counted
    else:
        asyncio.run((_litellm if path == "litellm" else _aiohttp)(base, n, concurrency))
    t2, c2 = time.perf_counter(), _cpu()
    return {"path": path, "import_s": round(t1 - t0, 2), "requests": n, "wall_s": round(t2 - t1, 2),
            "requests_per_s": round(n / (t2 - t1), 1), "cpu_ms_per_request": round(1000 * (c2 - c1) / n, 2),
            "litellm_imported": "litellm" in sys.modules}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=600)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--paths", nargs="+", default=["aiohttp", "kdc-http", "kdc-litellm", "litellm"],
                    choices=["aiohttp", "kdc-http", "kdc-http-2w", "kdc-litellm", "litellm"])
    ap.add_argument("--repeat", type=int, default=1, help="alternate the paths this many times; medians")
    ap.add_argument("--one", nargs=2, metavar=("PATH", "BASE"), help=argparse.SUPPRESS)  # internal
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1], args.requests, args.concurrency)))
        return
    server = subprocess.Popen([sys.executable, str(ROOT / "tests" / "teacher_server.py"), "--latency",
                               str(args.latency), "--capacity", str(args.concurrency)], stdout=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{int(server.stdout.readline().split()[1])}/v1"
        print(f"$ python benchmarks/bench_client_cpu.py {' '.join(sys.argv[1:])}")
        print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs, latency {args.latency}s, "
              f"concurrency {args.concurrency} (ceiling {args.concurrency / args.latency:.0f} req/s)")
        runs: dict[str, list[dict]] = {p: [] for p in args.paths}
        for _ in range(args.repeat):
            for path in args.paths:
                out = subprocess.run([sys.executable, __file__, "--one", path, base, "--requests", str(args.requests),
                                      "--concurrency", str(args.concurrency)], capture_output=True, text=True, check=True)
                runs[path].append(json.loads(out.stdout.strip().splitlines()[-1]))
        for path, rs in runs.items():
            r = {k: statistics.median(x[k] for x in rs) for k in ("import_s", "wall_s", "requests_per_s",
                                                                    "cpu_ms_per_request")}
            print(f"  {path:12} import {r['import_s']:5.2f} s   {args.requests} requests in {r['wall_s']:6.2f} s "
                  f"({r['requests_per_s']:6.1f}/s)   client CPU {r['cpu_ms_per_request']:5.2f} ms/request   "
                  f"litellm imported: {rs[0]['litellm_imported']}" + (f"   (median of {len(rs)})" if len(rs) > 1 else ""))
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()

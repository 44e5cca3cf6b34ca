#!/usr/bin/env python3
"""Benchmark `kdc validate` against InstructLab's reference validator on the same files.

    .venv/bin/python benchmarks/bench_validate.py [--corpus DIR] [--runs 3] [--with-yq]

The reference is run the way its labels say: `TaxonomyParser(schema_version=0)` from
`instructlab.schema.taxonomy`, one file after another, in its own process, with its `yamllint`
on PATH. It hangs on alias bombs and huge files, so each file gets a time limit (SIGALRM).
By default its `yq` look-ups (line numbers only; one subprocess per schema error) are off,
which is the reference at its fastest; --with-yq keeps them when a `yq` is installed.

kdc is timed end to end as a command (`python -m compiler validate`, interpreter start-up
included; the reference's start-up is not counted), on all cores: cold (--no-cache), cold with
an empty cache (it fills it), and warm. CPU seconds (user + sys of every process) are reported
too: on a shared machine they are steadier than wall time. Verdicts are compared file by file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "taxonomy-history"

REFERENCE = r"""
import io, json, logging, signal, sys, time
from contextlib import redirect_stdout
logging.disable(logging.CRITICAL)
from instructlab.schema.taxonomy import TaxonomyParser

files, with_yq, limit = json.loads(sys.stdin.read())
parser = TaxonomyParser(schema_version=0, message_format="standard")
parser.yq_available = with_yq

class Timeout(Exception):
    pass

def alarm(signum, frame):
    raise Timeout()

signal.signal(signal.SIGALRM, alarm)
verdicts, timeouts = {}, []
started = time.perf_counter()
for f in files:
    signal.alarm(limit)
    try:
        with redirect_stdout(io.StringIO()):
            verdicts[f] = parser.parse(f).errors == 0
    except Timeout:
        verdicts[f] = False
        timeouts.append(f)
    except Exception:
        verdicts[f] = False  # the reference raises on some bad files: a rejection
    finally:
        signal.alarm(0)
print(json.dumps({"seconds": time.perf_counter() - started, "verdicts": verdicts, "timeouts": timeouts}))
"""


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_reference(files: list[str], with_yq: bool, per_file_limit: int) -> dict:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    started, cpu = time.perf_counter(), _children_cpu()
    out = subprocess.run([sys.executable, "-c", REFERENCE], input=json.dumps([files, with_yq, per_file_limit]),
                         capture_output=True, text=True, env=env, timeout=max(600, 5 * len(files)))
    wall = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"reference run failed:\n{out.stderr[-2000:]}")
    data = json.loads(out.stdout)
    data["wall"] = wall
    data["cpu"] = _children_cpu() - cpu  # the reference and its yamllint/yq subprocesses
    return data


def run_kdc(files: list[str], root: Path, cache_home: Path | None) -> tuple[float, float, dict]:
    args = [sys.executable, "-m", "compiler", "validate", "--format", "json", "--root", str(root)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if cache_home is None:
        args.append("--no-cache")
    else:
        env["XDG_CACHE_HOME"] = str(cache_home)
    started, cpu = time.perf_counter(), _children_cpu()
    out = subprocess.run(args + files, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    wall = time.perf_counter() - started
    if out.returncode not in (0, 1):
        raise SystemExit(f"kdc validate failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return wall, _children_cpu() - cpu, json.loads(out.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--runs", type=int, default=3, help="runs of each kdc mode (the median is reported)")
    ap.add_argument("--with-yq", action="store_true", help="let the reference call yq for line numbers")
    ap.add_argument("--per-file-limit", type=int, default=20, help="seconds the reference may spend on one file")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    opts = ap.parse_args()

    labels = opts.corpus / "labels.jsonl"
    if not labels.is_file():
        raise SystemExit(f"corpus not found: {labels}")
    files = [str(opts.corpus / json.loads(line)["file"]) for line in labels.read_text().splitlines() if line.strip()]
    n = len(files)
    print(f"{n} files from {opts.corpus}; {os.cpu_count()} cores; python {platform.python_version()}", flush=True)

    ref = run_reference(files, opts.with_yq, opts.per_file_limit)
    print(f"reference (instructlab-schema 0.4.2{', with yq' if opts.with_yq else ''}): "
          f"{ref['seconds']:.2f} s ({1000 * ref['seconds'] / n:.1f} ms/file), CPU {ref['cpu']:.2f} s, "
          f"{len(ref['timeouts'])} timeouts", flush=True)

    cold, warm, fill, cold_cpu, warm_cpu = [], [], [], [], []
    result = None
    for _ in range(opts.runs):
        wall, cpu, result = run_kdc(files, opts.corpus, None)
        cold.append(wall)
        cold_cpu.append(cpu)
        with tempfile.TemporaryDirectory() as cache:
            wall, _, _ = run_kdc(files, opts.corpus, Path(cache))
            fill.append(wall)
            wall, cpu, warm_result = run_kdc(files, opts.corpus, Path(cache))
            warm.append(wall)
            warm_cpu.append(cpu)
            assert warm_result["summary"]["cache_hits"] == n, warm_result["summary"]
    ours = {os.path.abspath(os.path.join(ROOT, f["path"])): f["valid"] for f in result["files"]}
    disagree = [f for f in files if ours.get(os.path.abspath(f)) != ref["verdicts"][f]]
    figures = {"files": n, "reference_s": round(ref["seconds"], 3), "reference_cpu_s": round(ref["cpu"], 3),
               "kdc_cold_cpu_s": round(statistics.median(cold_cpu), 3),
               "kdc_warm_cpu_s": round(statistics.median(warm_cpu), 3),
               "load_average": os.getloadavg()[0],
               "kdc_cold_no_cache_s": round(statistics.median(cold), 3),
               "kdc_cold_filling_cache_s": round(statistics.median(fill), 3),
               "kdc_warm_s": round(statistics.median(warm), 3), "disagreements": len(disagree),
               "reference_with_yq": opts.with_yq}
    figures["speedup_cold"] = round(figures["reference_s"] / figures["kdc_cold_no_cache_s"], 1)
    figures["speedup_warm"] = round(figures["reference_s"] / figures["kdc_warm_s"], 1)
    print(f"kdc cold, --no-cache:     {figures['kdc_cold_no_cache_s']:.2f} s  "
          f"({figures['speedup_cold']}x faster)  runs: {', '.join(f'{x:.2f}' for x in cold)}")
    print(f"kdc cold, filling cache:  {figures['kdc_cold_filling_cache_s']:.2f} s  "
          f"runs: {', '.join(f'{x:.2f}' for x in fill)}")
    print(f"kdc warm (cache hits):    {figures['kdc_warm_s']:.2f} s  "
          f"({figures['speedup_warm']}x faster)  runs: {', '.join(f'{x:.2f}' for x in warm)}")
    print(f"CPU seconds (user+sys, all processes): reference {figures['reference_cpu_s']:.2f}, kdc cold "
          f"{figures['kdc_cold_cpu_s']:.2f} ({figures['reference_cpu_s'] / figures['kdc_cold_cpu_s']:.1f}x less), "
          f"kdc warm {figures['kdc_warm_cpu_s']:.2f}; load average {figures['load_average']:.1f}")
    print(f"verdict disagreements: {len(disagree)}" + (f" e.g. {disagree[:3]}" if disagree else ""))
    if opts.json:
        opts.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 1 if disagree else 0


if __name__ == "__main__":
    sys.exit(main())

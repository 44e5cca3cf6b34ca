#!/usr/bin/env python3
"""One-file pull request: `kdc validate FILE` vs the reference validator on the same file, each as
a whole process (interpreter start-up and imports included), alternating, N runs each.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_validate_one.py [FILE] [--runs 21] [--instructions]

The reference is instructlab-schema 0.4.2's `TaxonomyParser(schema_version=0)` (as in
bench_validate.py, yq look-ups off: the reference at its fastest), run by `python -c`. kdc runs
as `python -m compiler validate FILE --no-cache` (cold: no result cache) and, for the record,
with its per-user result cache warm. Both run with bytecode caching on, as installed packages
do (PYTHONDONTWRITEBYTECODE is dropped for the runs). Prints the medians and the ratio, of wall
time (what the issue asks) and of CPU time (user + system, children included: less sensitive to
other work on the machine), with the load average. --instructions also counts each command's
instructions under valgrind (a figure a busy machine cannot move).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "taxonomy" / "knowledge" / "science" / "astronomy" / "solar_system" / "qna.yaml"
REFERENCE = ("import io, logging, sys\nfrom contextlib import redirect_stdout\nlogging.disable(logging.CRITICAL)\n"
             "from instructlab.schema.taxonomy import TaxonomyParser\n"
             "p = TaxonomyParser(schema_version=0, message_format='standard')\np.yq_available = False\n"
             "with redirect_stdout(io.StringIO()):\n    ok = p.parse(sys.argv[1]).errors == 0\n"
             "sys.exit(0 if ok else 1)\n")


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of the process and its children, exit code)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    rc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT).returncode
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, rc


def instructions(cmd: list[str], env: dict[str, str]) -> int:
    """Instructions the command and its children execute, by valgrind's cachegrind (no cache
    simulation): the same on a busy machine as on a quiet one, unlike time."""
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no", "--trace-children=yes",
                        f"--cachegrind-out-file={out}/cg.%p", *cmd], env=env, cwd=ROOT,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        total = 0
        for f in Path(out).glob("cg.*"):
            for line in f.read_text().splitlines():
                if line.startswith("summary:"):
                    total += int(line.split()[1])
        return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("file", nargs="?", type=Path, default=DEFAULT)
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--instructions", action="store_true",
                    help="also count the instructions each command executes (valgrind; independent of load)")
    args = ap.parse_args()
    f = args.file.resolve()
    bindir = str(Path(sys.executable).parent)
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": cache,
               "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}
        # both as installed packages are: bytecode cached (pip compiles it; the warm-up writes it)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        kdc_cold = [sys.executable, "-m", "compiler", "validate", str(f), "--no-cache"]
        kdc_warm = [sys.executable, "-m", "compiler", "validate", str(f)]
        ref = [sys.executable, "-c", REFERENCE, str(f)]
        times: dict[str, list[float]] = {"kdc (cold)": [], "kdc (warm cache)": [], "reference": []}
        cpu: dict[str, list[float]] = {k: [] for k in times}
        verdicts: dict[str, set[int]] = {k: set() for k in times}
        timed(kdc_warm, env)  # fill the cache and the OS page cache once
        timed(ref, env)
        for _ in range(args.runs):
            for name, cmd in (("reference", ref), ("kdc (cold)", kdc_cold), ("kdc (warm cache)", kdc_warm)):
                t, c, rc = timed(cmd, env)
                times[name].append(t)
                cpu[name].append(c)
                verdicts[name].add(rc)
        counts = {name: instructions(cmd, env) for name, cmd in
                  (("kdc (cold)", kdc_cold), ("kdc (warm cache)", kdc_warm), ("reference", ref))
                  } if args.instructions else {}
    print(f"file: {f.relative_to(ROOT) if f.is_relative_to(ROOT) else f}  runs: {args.runs} each, alternating  "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    for name, t in med.items():
        print(f"  {name:18s} median {t * 1000:7.1f} ms   (min {min(times[name]) * 1000:6.1f} ms)  "
              f"CPU {med_cpu[name] * 1000:6.1f} ms  exit codes {sorted(verdicts[name])}")
    print(f"ratio reference / kdc (cold): {med['reference'] / med['kdc (cold)']:.2f}x   "
          f"(warm cache: {med['reference'] / med['kdc (warm cache)']:.2f}x)   "
          f"CPU: {med_cpu['reference'] / med_cpu['kdc (cold)']:.2f}x")
    for name, n in counts.items():
        print(f"  {name:18s} {n / 1e6:7.0f} M instructions (children included)")
    if counts:
        print(f"instruction ratio reference / kdc (cold): {counts['reference'] / counts['kdc (cold)']:.2f}x")


if __name__ == "__main__":
    main()

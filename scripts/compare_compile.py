"""Compile the example taxonomy with two kdc checkouts against the loopback teacher
(tests/teacher_server.py) and diff every file of the two builds.

Why: a refactor of how the build directory is written must not change a byte of it. Timing
fields (totals.seconds, totals.mean_in_flight) and the cache are left out; files only one side
has are listed (e.g. hf/ when one checkout no longer writes it).

    python scripts/compare_compile.py OLD_CHECKOUT NEW_CHECKOUT [--work DIR] [--judge]

Both builds are written to the same path (the report names its folder), one after the other.
Exit status 0: identical apart from the listed one-sided paths; 1: a file differs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMING = ("seconds", "mean_in_flight")


def compile_with(checkout: Path, tax: Path, out: Path, url: str, judge: bool) -> None:
    env = {**os.environ, "PYTHONPATH": str(checkout), "OPENAI_API_KEY": "sk-test",
           "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1"}
    args = [sys.executable, "-m", "compiler", "compile", str(tax), "--out", str(out), "--teacher",
            "openai/teacher-test", "--api-base", url, "--concurrency", "8", "--samples-per-node", "3"]
    args += [] if judge else ["--no-judge"]  # judged: the teacher judges its own samples (the default)
    run = subprocess.run(args, env=env, cwd=checkout, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"compile with {checkout} failed ({run.returncode}):\n{run.stderr[-3000:]}")


def files(root: Path, url: str) -> dict[str, bytes]:
    """Every file but the cache, the teacher's (per-run) loopback port and the timing fields blanked."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not rel.startswith(".kdc/"):
            data = p.read_bytes().replace(url.encode(), b"http://TEACHER")
            if rel == "manifest.json":
                m = json.loads(data)
                for k in TIMING:
                    m.get("totals", {}).pop(k, None)
                data = json.dumps(m, indent=2, sort_keys=True).encode()
            out[rel] = data
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--work", type=Path, default=Path("/tmp/kdc-compare"))
    ap.add_argument("--judge", action="store_true", help="the teacher judges its samples (kdc's default; the test server answers)")
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from teacher_server import TeacherServer

    shutil.rmtree(a.work, ignore_errors=True)
    tax = a.work / "taxonomy"
    shutil.copytree(ROOT / "taxonomy", tax)
    shutil.copytree(ROOT / "build" / "doc-repos", a.work / "build" / "doc-repos", symlinks=True)
    (a.work / ".git").mkdir()
    cfg = tax / "kdc.yaml"  # as tests/test_compile.py: the default attempt budget
    cfg.write_text("".join(l for l in cfg.read_text().splitlines(True) if not l.startswith("max_attempts")))
    builds = {}
    for name, checkout in (("old", a.old), ("new", a.new)):
        out = a.work / "out"
        with TeacherServer() as srv:
            compile_with(checkout.resolve(), tax, out, srv.url, a.judge)
            url = srv.url
        out.rename(a.work / name)
        builds[name] = files(a.work / name, url)
    old, new = builds["old"], builds["new"]
    differ = sorted(k for k in old.keys() & new.keys() if old[k] != new[k])
    print(f"{len(old.keys() & new.keys())} files in both, {len(differ)} differ")
    for k in differ:
        print("  DIFFERS", k)
    for k in sorted(old.keys() - new.keys()):
        print("  only old:", k)
    for k in sorted(new.keys() - old.keys()):
        print("  only new:", k)
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())

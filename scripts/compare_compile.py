"""Compile the example taxonomy with two kdc checkouts against the loopback teacher
(tests/teacher_server.py) and diff every file of the two builds.

Why: a refactor of how the build directory is written must not change a byte of it. Timing
fields (totals.seconds, totals.mean_in_flight) and the cache are left out; files only one side
has are listed (e.g. hf/ when one checkout no longer writes it).

    python scripts/compare_compile.py OLD_CHECKOUT NEW_CHECKOUT [--work DIR] [--judge] [--review]

--review then applies the same filled review sheet (seed 1: a reject, an edit, an accept) to both
builds with each checkout's own `kdc review` code, and diffs again.

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


REVIEW = """
import csv, sys
from datetime import datetime, timezone
from pathlib import Path
try:
    from compiler.review.apply import apply_sheet
except ImportError:  # before the review split
    from compiler.review.sheet import apply_sheet
from compiler.review.sheet import draw_sheet
out = Path(sys.argv[1])
sheet = draw_sheet(out, seed=1)
with sheet.open(newline="", encoding="utf-8") as fh:
    rows = list(csv.DictReader(fh))
rows[0].update(verdict="reject", why="wrong")
rows[1].update(verdict="edit", why="shorter", edited_answer="A shorter answer.")
rows[2].update(verdict="accept")
with sheet.open("w", newline="", encoding="utf-8") as fh:
    w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\\r\\n")
    w.writeheader()
    w.writerows(rows)
apply_sheet(out, sheet, reviewer="alice", now=datetime(2026, 3, 1, tzinfo=timezone.utc))
"""


def review_with(checkout: Path, out: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(checkout), "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-c", REVIEW, str(out)], env=env, cwd=checkout, capture_output=True,
                         text=True)
    if run.returncode != 0:
        raise SystemExit(f"review with {checkout} failed ({run.returncode}):\n{run.stderr[-3000:]}")


def json_diff(a: object, b: object, at: str = "") -> list[str]:
    """The JSON paths where two values differ (dict key order included)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{at}: key order" for _ in [0] if list(a) != list(b) and set(a) == set(b)]
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{at}.{k}: only {'new' if k not in a else 'old'}")
            else:
                out += json_diff(a[k], b[k], f"{at}.{k}")
        return out
    return [] if a == b else [f"{at}: {json.dumps(a)[:80]} -> {json.dumps(b)[:80]}"]


def compare(old: dict[str, bytes], new: dict[str, bytes]) -> int:
    differ = sorted(k for k in old.keys() & new.keys() if old[k] != new[k])
    print(f"{len(old.keys() & new.keys())} files in both, {len(differ)} differ")
    for k in differ:
        print("  DIFFERS", k)
        if k == "manifest.json":
            for line in json_diff(json.loads(old[k]), json.loads(new[k]))[:40]:
                print("     ", line)
    for k in sorted(old.keys() - new.keys()):
        print("  only old:", k)
    for k in sorted(new.keys() - old.keys()):
        print("  only new:", k)
    return 1 if differ else 0


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
                data = json.dumps(m, indent=2).encode()
            out[rel] = data
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--work", type=Path, default=Path("/tmp/kdc-compare"))
    ap.add_argument("--judge", action="store_true", help="the teacher judges its samples (kdc's default; the test server answers)")
    ap.add_argument("--review", action="store_true", help="then apply the same review sheet to both builds")
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
    builds, urls = {}, {}
    for name, checkout in (("old", a.old), ("new", a.new)):
        out = a.work / "out"
        with TeacherServer() as srv:
            compile_with(checkout.resolve(), tax, out, srv.url, a.judge)
            urls[name] = srv.url
        out.rename(a.work / name)
        builds[name] = files(a.work / name, urls[name])
    print("== compile")
    status = compare(builds["old"], builds["new"])
    if a.review:
        for name, checkout in (("old", a.old), ("new", a.new)):
            (a.work / name).rename(a.work / "out")  # the report names its folder: the same one for both
            review_with(checkout.resolve(), a.work / "out")
            (a.work / "out").rename(a.work / name)
            builds[name] = files(a.work / name, urls[name])
        print("== after the same review --apply")
        status |= compare(builds["old"], builds["new"])
    return status

if __name__ == "__main__":
    raise SystemExit(main())

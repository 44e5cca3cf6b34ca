#!/usr/bin/env python3
"""Benchmark PDF knowledge documents: what reading a PDF costs compile and validate.

1. pypdf conversion (compiler/taxonomy/pdf.read_pdf) of a generated PDF of --pages pages of
   --lines lines each (tests/pdf_fixtures.make_pdf, Helvetica text): pages/s and ms per page.
2. validate's document check (compiler/validate/docrefs.check_document) on a git repository
   holding that PDF and --md Markdown files: ms per check, and the same check with the
   documents' content checks skipped (matching only), i.e. what reading the bytes adds.

usage: bench_pdf.py [--pages 100] [--lines 40] [--md 20] [--repeat 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from pdf_fixtures import make_pdf  # noqa: E402

from compiler.taxonomy.pdf import read_pdf  # noqa: E402
from compiler.validate import docrefs  # noqa: E402


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=100)
    ap.add_argument("--lines", type=int, default=40)
    ap.add_argument("--md", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json")
    a = ap.parse_args()
    line = "The comet's nucleus is a loose aggregate of ice, dust and rock, about ten kilometres wide."
    data = make_pdf([[f"{n}. {line}" for n in range(a.lines)] for _ in range(a.pages)])
    t_pdf = best(lambda: read_pdf(data), a.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "docs"
        repo.mkdir()
        (repo / "manual.pdf").write_bytes(data)
        for i in range(a.md):
            (repo / f"page{i}.md").write_text(f"# Page {i}\n\n{line}\n" * 20, encoding="utf-8")
        env = {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x.invalid", "GIT_COMMITTER_NAME": "b",
               "GIT_COMMITTER_EMAIL": "b@x.invalid", "PATH": "/usr/bin:/bin"}
        for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["-c", "commit.gpgsign=false", "commit", "-q", "-m", "d"]):
            subprocess.run(["git", "-C", str(repo), *args], check=True, env=env, capture_output=True)
        sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True,
                             text=True).stdout.strip()
        check = lambda: docrefs.check_document("docs", sha, ["*.md", "*.pdf"], Path(tmp))  # noqa: E731
        assert not check().issues, check().issues
        t_full = best(check, a.repeat)
        with mock.patch.object(docrefs, "_content_issues", lambda *_: []):
            t_match = best(check, a.repeat)
    out = {"pdf_pages": a.pages, "pdf_bytes": len(data), "pdf_pages_per_s": round(a.pages / t_pdf, 1),
           "pdf_ms_per_page": round(1000 * t_pdf / a.pages, 2), "md_files": a.md,
           "validate_check_ms": round(1000 * t_full, 1), "validate_match_only_ms": round(1000 * t_match, 1),
           "content_checks_add_ms": round(1000 * (t_full - t_match), 1)}
    print(json.dumps(out, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

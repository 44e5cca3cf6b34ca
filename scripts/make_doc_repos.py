#!/usr/bin/env python3
"""Turn each folder of documents/ into a git repository with a deterministic commit.

The commit id depends only on the files (fixed author, committer, dates and message), so the
`document.commit` written in the example taxonomy is the same on every machine. Idempotent.

usage: make_doc_repos.py SRC_DIR DEST_DIR
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

FIXED = {
    "GIT_AUTHOR_NAME": "kdc", "GIT_AUTHOR_EMAIL": "kdc@example.invalid",
    "GIT_COMMITTER_NAME": "kdc", "GIT_COMMITTER_EMAIL": "kdc@example.invalid",
    "GIT_AUTHOR_DATE": "2026-01-01T00:00:00+0000", "GIT_COMMITTER_DATE": "2026-01-01T00:00:00+0000",
    "GIT_CONFIG_NOSYSTEM": "1", "HOME": os.devnull,
}


def git(*args: str, cwd: Path) -> str:
    env = {**os.environ, **FIXED}
    env.pop("GIT_DIR", None)
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def build_repo(src: Path, dest: Path) -> str:
    """Build dest as a one-commit repository holding src's files; return the commit id.

    Built beside dest and swapped in only when it differs, so concurrent readers never see a
    half-built repository."""
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(src, tmp)
    git("init", "-q", "-b", "main", cwd=tmp)
    git("add", "-A", cwd=tmp)
    git("-c", "commit.gpgsign=false", "commit", "-q", "-m", f"documents: {src.name}", cwd=tmp)
    commit = git("rev-parse", "HEAD", cwd=tmp)
    try:
        current = git("rev-parse", "HEAD", cwd=dest) if (dest / ".git").exists() else None
    except subprocess.CalledProcessError:
        current = None
    if current == commit:
        shutil.rmtree(tmp)
    else:
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    return commit


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    src_root, dest_root = Path(argv[0]), Path(argv[1])
    dest_root.mkdir(parents=True, exist_ok=True)
    for folder in sorted(p for p in src_root.iterdir() if p.is_dir()):
        print(f"{build_repo(folder, dest_root / folder.name)}  {dest_root / folder.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Which qna files changed since a base branch: what a pull request's CI has to check.

Like `ilab taxonomy diff`: files added or modified since the merge base with REF, plus
uncommitted and untracked ones; deleted files are gone and not checked. Real `git`.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from compiler.errors import UsageError
from compiler.taxonomy.tree import is_qna_like


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """compiler/io/gitrepo.py's hardened runner in the maintainer's own checkout (their global
    config kept: CI's safe.directory lives there), text out."""
    from compiler.io.gitrepo import RefError, git

    try:
        r = git(args, cwd=cwd, own_config=True)
    except RefError as exc:
        raise UsageError(f"--changed-since: {exc.message}") from None
    return subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode("utf-8", "surrogateescape"),
                                       r.stderr.decode("utf-8", "replace"))


def changed_files(ref: str, where: Path) -> tuple[list[Path], str]:
    """(absolute paths of qna-like files changed since the merge base of REF and HEAD, merge base)."""
    if not ref or ref.startswith("-"):
        raise UsageError(f"invalid git reference {ref!r}")
    r = _git(["rev-parse", "--show-toplevel"], where)
    if r.returncode != 0:
        raise UsageError(f"--changed-since needs a git repository; {where} is not in one",
                         hint="run kdc validate inside the taxonomy's git checkout")
    top = Path(r.stdout.strip())
    if _git(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], top).returncode != 0:
        raise UsageError(f"unknown git reference {ref!r}",
                         hint="fetch it first (git fetch origin); in GitHub Actions check out with fetch-depth: 0")
    r = _git(["merge-base", ref, "HEAD"], top)
    if r.returncode != 0:
        raise UsageError(f"{ref} and HEAD have no common ancestor",
                         hint="fetch the full history (fetch-depth: 0 in actions/checkout)")
    base = r.stdout.strip()
    diff = _git(["diff", "--name-only", "--no-renames", "--diff-filter=d", "-z", base, "--"], top)
    untracked = _git(["ls-files", "--others", "--exclude-standard", "-z"], top)
    for res in (diff, untracked):
        if res.returncode != 0:
            raise UsageError(f"git failed: {res.stderr.strip().splitlines()[-1] if res.stderr.strip() else 'unknown'}")
    names = sorted({n for n in (diff.stdout + untracked.stdout).split("\0") if n})
    return [top / n for n in names if is_qna_like(n.rsplit("/", 1)[-1]) and os.path.lexists(top / n)], base

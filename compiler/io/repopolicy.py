"""Where a taxonomy's `document.repo` may point: the trust rule behind knowledge documents.

A pull request writes `document.repo`, so it must not make kdc read (and then ship to a teacher)
any git repository on the machine. A repo is accepted when it is
- a relative path that resolves (symlinks followed) inside the taxonomy's own checkout: the git
  work tree holding the taxonomy root, found by walking up for `.git` without running git there,
  or the taxonomy root itself when there is none (`../build/doc-repos/x` in this project works);
- an `https://` URL (read only from kdc's clone cache; network only with `--fetch`; other
  schemes are refused when fetching and otherwise left unread, like an uncached URL);
- or under a prefix the maintainer allowed (`--allow-repo`, or `allow_repos:` in a trusted
  config): a folder for local paths, a URL prefix for URLs (then ssh, http, git and file URLs
  are accepted too: the maintainer chose them).
Everything else (absolute paths, `~`, escapes, other schemes) is refused with one message that
says nothing about whether the path exists. Validate and compile both call `confine`.
"""

from __future__ import annotations

import os
from pathlib import Path

from compiler.io.gitrepo import RefError, is_remote, redact

RULE = "document-repo-outside"
_HINT = ("document repos must live inside the taxonomy's checkout (a relative path) or be https:// URLs; "
         "a maintainer can allow more with --allow-repo PREFIX")


def checkout_root(root: Path) -> Path:
    """The work tree holding `root` (nearest folder up with a `.git`), else `root`; real path."""
    start = Path(os.path.abspath(root))
    for folder in (start, *start.parents):
        if os.path.lexists(folder / ".git"):
            return Path(os.path.realpath(folder))
    return Path(os.path.realpath(start))


def _allowed_url(url: str, allow: tuple[str, ...]) -> bool:
    return any(is_remote(a) and url.startswith(a) for a in allow)


def _allowed_path(path: Path, allow: tuple[str, ...]) -> bool:
    for a in allow:
        if is_remote(a) or not a.strip():
            continue
        base = Path(os.path.realpath(os.path.expanduser(a)))
        if path == base or path.is_relative_to(base):
            return True
    return False


def confine(repo: str, root: Path, allow: tuple[str, ...] = (), *, fetching: bool = False) -> Path | str | None:
    """The URL as written, or the real path of a local repo; RefError(RULE) when outside.
    None: a URL of a refused scheme while nothing is fetched (it is neither read nor contacted;
    validate leaves it unchecked, as the reference does, and compile asks for --fetch)."""
    if is_remote(repo):
        if repo.lower().startswith("https://") or _allowed_url(repo, allow):
            return repo
        if not fetching:
            return None
        raise RefError("repo", f"document repo {redact(repo)} is refused: only https:// URLs are fetched "
                       "for a taxonomy", _HINT, rule=RULE)
    given = Path(os.path.expanduser(repo)) if repo.startswith("~") else Path(repo)
    real = Path(os.path.realpath(given if given.is_absolute() else Path(root) / given))
    if _allowed_path(real, allow):
        return real
    if not given.is_absolute() and not repo.startswith("~") and real.is_relative_to(checkout_root(root)):
        return real
    raise RefError("repo", f"document repo {repo} is outside the taxonomy checkout", _HINT, rule=RULE)

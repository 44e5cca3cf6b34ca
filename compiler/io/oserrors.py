"""Errors that are not kdc's own (the OS, SQLite, libraries) as one located line and a hint.

The CLI's last resort: what reaches a user is the path, what went wrong and what to do; the
traceback only with KDC_DEBUG=1. Every build output is written atomically and the teacher cache
commits each answer as it arrives, so a failure here loses nothing already paid for."""

from __future__ import annotations

import errno

from compiler.io.names import safe_display

KEPT = "answers already paid for are kept in DIR/.kdc/cache.sqlite; re-run the same command"
HINTS = {
    errno.ENOSPC: f"the disk is full: free space (or pick another --out) and re-run; {KEPT}",
    errno.EDQUOT: f"the disk quota is used up: free space and re-run; {KEPT}",
    errno.EFBIG: f"the file is larger than this system allows (ulimit -f?); {KEPT}",
    errno.EACCES: "kdc may not write there: choose a writable folder (--out DIR) or fix its permissions",
    errno.EPERM: "kdc may not write there: choose a writable folder (--out DIR) or fix its permissions",
    errno.EROFS: "the file system is read-only: choose another folder (--out DIR)",
    errno.ENAMETOOLONG: "a name is too long for this file system: shorten the folder names "
                        "(`kdc validate` reports them) or use a shorter --out",
    errno.ENOENT: "the file or folder does not exist: check the path",
    errno.ENOTDIR: "a part of the path is a file, not a folder: check the path",
    errno.EISDIR: "the path is a folder, not a file: check the path",
}


def describe(exc: BaseException) -> tuple[str, str]:
    """(message, hint) for an exception kdc did not raise itself."""
    if isinstance(exc, OSError):
        where = exc.filename if exc.filename is not None else None
        what = exc.strerror or str(exc)
        message = f"{safe_display(str(where))}: {what}" if where is not None else what
        return message, HINTS.get(exc.errno, f"check the path and the disk; {KEPT}")
    if type(exc).__module__ == "sqlite3":
        text = str(exc)
        if "full" in text:
            return f"the teacher cache (SQLite): {text}", HINTS[errno.ENOSPC]
        return (f"the teacher cache (SQLite): {text}",
                "if DIR/.kdc/cache.sqlite is damaged, move it aside and re-run (its answers are asked again)")
    if isinstance(exc, UnicodeError):
        return (f"a name or text is not valid UTF-8 ({exc})",
                "run `kdc validate` on the taxonomy: it reports names no build can write")
    module = type(exc).__module__.split(".")[0]
    return (f"{module}: {type(exc).__name__}: {exc}",
            "this is a bug in kdc or a library it uses; re-run with KDC_DEBUG=1 for the traceback and report it")

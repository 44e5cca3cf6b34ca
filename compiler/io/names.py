"""Folder and file names a build can write. A leaf's folder path becomes its node id, and the id
becomes paths under --out (nodes/<id>/rejected.jsonl and mixes/sources/<phase>/<id>.jsonl, each
with atomic_write's temp name). Validate refuses a name those
paths cannot hold, so compile never fails on it after the teacher was paid.

Bounds (with margin for kdc's own prefixes and suffixes, at most ~20 bytes per component):
every path component at most COMPONENT_MAX bytes of UTF-8 (the file-system limit is 255), the
whole path of a qna file at most PATH_BYTES_MAX bytes (PATH_MAX is 4096; the rest is left for
--out and the build's own folders)."""

from __future__ import annotations

import unicodedata

COMPONENT_MAX = 200
PATH_BYTES_MAX = 1024


def safe_display(rel: str) -> str:
    """`rel` printable on any terminal: undecodable bytes as \\xNN, control characters escaped."""
    text = rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if unicodedata.category(c) != "Cc" else repr(c)[1:-1] for c in text)


def name_problems(rel: str) -> list[tuple[str, str, str]]:
    """(rule, message, hint) for each reason no build can write the '/'-separated path `rel`."""
    out: list[tuple[str, str, str]] = []
    parts = rel.split("/")
    for part in parts:
        shown = safe_display(part)
        try:
            size = len(part.encode("utf-8"))
        except UnicodeEncodeError:
            out.append(("name-not-utf8", f"the name {shown!r} is not valid UTF-8",
                        "rename it with UTF-8 characters only (git mv OLD NEW)"))
            continue
        if any(unicodedata.category(c) == "Cc" for c in part):
            out.append(("name-control-character", f"the name {shown!r} holds a control character",
                        "rename it without tabs, newlines or other control characters"))
        if size > COMPONENT_MAX:
            out.append(("name-too-long", f"the name {shown[:40]!r}... is {size} bytes long "
                        f"(at most {COMPONENT_MAX}: the build's file names add to it)",
                        "give the folder a shorter name"))
    if not out:
        size = len(rel.encode("utf-8"))
        if size > PATH_BYTES_MAX:
            out.append(("path-too-long", f"the path is {size} bytes long (at most {PATH_BYTES_MAX}: the "
                        "build writes it below --out, and a path holds at most 4096 bytes)",
                        "use fewer or shorter folder names"))
    return out

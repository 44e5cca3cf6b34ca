"""Knowledge chunks that follow the document's structure.

A fixed word window cuts a table between rows, a code block between lines and a section away
from its heading, and the teacher then asks about half a table. Here the converted text is cut at
block boundaries only: a heading starts a new chunk (small sections merge with the next one), a
table or code block stays whole unless it alone is over the size (then it is cut between rows or
lines, never inside one), and an over-long paragraph is cut between sentences. Each chunk records
its heading path, so a content row can ask "what does <title> say about <section>?".

Spans are character offsets into the converted text (what documents.markdown_to_text returns).
Blocks of a PDF carry their page number; a chunk records the pages it starts and ends on.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from compiler.records import Chunk

_WORD = re.compile(r"\S+")
_SENTENCE = re.compile(r"[^\n]*?(?:[.!?](?=\s)|$)", re.S)


@dataclass(frozen=True)
class Block:
    """One block of a converted document: its text, kind and (headings) level."""

    text: str
    kind: str  # heading | para | item | row | code | html
    level: int = 0
    page: int = 0  # PDFs: the 1-based page the block is on


@dataclass
class _Unit:
    start: int
    end: int
    words: int
    kind: str
    level: int = 0
    title: str = ""
    page: int = 0


def _words(text: str) -> int:
    return len(_WORD.findall(text))


def _units(text: str, blocks: list[Block]) -> list[_Unit]:
    """Blocks located in `text`; consecutive table rows become one unit (a table)."""
    units: list[_Unit] = []
    pos = 0
    for b in blocks:
        needle = b.text.strip()
        if not needle:
            continue
        at = text.find(needle, pos)
        if at < 0:
            continue
        end = at + len(needle)
        pos = end
        if b.kind == "row" and units and units[-1].kind == "row":
            units[-1].end, units[-1].words = end, units[-1].words + _words(needle)
        else:
            units.append(_Unit(at, end, _words(needle), b.kind, b.level, needle if b.kind == "heading" else "",
                               b.page))
    return units


def _pieces(text: str, u: _Unit, limit: int) -> list[_Unit]:
    """An over-long unit cut into pieces of at most `limit` words: tables and code between lines,
    paragraphs between sentences (a single over-long sentence stays whole)."""
    body = text[u.start:u.end]
    if u.kind in ("row", "code"):
        parts = [(m.start(), m.end()) for m in re.finditer(r"[^\n]+", body)]
    else:
        parts = [(m.start(), m.end()) for m in _SENTENCE.finditer(body) if body[m.start():m.end()].strip()]
    out: list[_Unit] = []
    for s, e in parts:
        seg = body[s:e]
        lead = len(seg) - len(seg.lstrip())
        s += lead
        n = _words(seg)
        if out and out[-1].words + n <= limit:
            out[-1].end, out[-1].words = u.start + e, out[-1].words + n
        else:
            out.append(_Unit(u.start + s, u.start + e, n, u.kind, page=u.page))
    return out or [u]


def section_chunks(repo: str, commit: str, file: str, text: str, blocks: list[Block],
                   chunk_words: int) -> list[Chunk]:
    """The document cut into chunks of about `chunk_words` words along its structure."""
    units = _units(text, blocks)
    if not units:
        return []
    title = next((u.title for u in units if u.kind == "heading" and u.level == 1), "")
    path: list[tuple[int, str]] = []  # open headings (level, text)
    groups: list[tuple[list[_Unit], str]] = []
    cur: list[_Unit] = []
    cur_heading = ""

    def close() -> None:
        nonlocal cur
        keep: list[_Unit] = []
        while cur and cur[-1].kind == "heading":  # a heading never ends a chunk: it opens the next
            keep.insert(0, cur.pop())
        if cur:
            groups.append((cur, cur_heading))
        cur = keep

    def words() -> int:
        return sum(u.words for u in cur if u.kind != "heading")

    for u in units:
        if u.kind == "heading":
            if words() >= chunk_words // 4:
                close()
            path[:] = [p for p in path if p[0] < u.level] + [(u.level, u.title)]
            if not any(x.kind != "heading" for x in cur):
                cur_heading = " > ".join(t for lvl, t in path if lvl > 1 or len(path) == 1)
            cur.append(u)
            continue
        pieces = _pieces(text, u, chunk_words) if u.words > chunk_words else [u]
        for p in pieces:
            if cur and words() and words() + p.words > chunk_words:
                close()
                cur_heading = " > ".join(t for lvl, t in path if lvl > 1 or len(path) == 1)
            cur.append(p)
    if cur:
        groups.append((cur, cur_heading))
    out: list[Chunk] = []
    for units_, heading in groups:
        s, e = units_[0].start, units_[-1].end
        body = text[s:e]
        out.append(Chunk(repo, commit, file, s, e, body, hashlib.sha256(body.encode("utf-8")).hexdigest(),
                         title, heading, units_[0].page, units_[-1].page))
    return out


def text_blocks(text: str) -> list[Block]:
    """Blocks of a plain-text document: its blank-line-separated paragraphs."""
    return [Block(p, "para") for p in re.split(r"\n\s*\n", text) if p.strip()]

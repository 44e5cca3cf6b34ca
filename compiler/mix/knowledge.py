"""The knowledge phase's rows: four kinds that each teach the documents a different way.

Open-book rows alone teach a student to read an excerpt, not to know it (InstructLab's p07/p10
and RAFT, see docs/build-layout.md). So every knowledge leaf's accepted Q&A and its document
chunks become, per leaf and in configured shares:

- `content`: the user asks what the document says about a section; the assistant's target is the
  section text itself, so the loss runs over the document. With augmentation on, every *accepted*
  view of a section (detailed summary, extractive summary, atomic-fact list: `views.jsonl` lines
  with status "accepted"; `mix.content_views` picks the kinds) is a content row too, its target the
  view text, its provenance (view kind, hash, source span, request key) in `metadata.view`.
  Rejected views never become rows. Views are content rows, not a fifth kind, because they teach
  the same thing the same way (the document's own statements in the loss), the issue's outside
  check counts them as content, and existing `mix.knowledge_shares` stay valid; sections and
  views share the `content` share in proportion to how many of each there are.
- `closed_book`: the question alone, no excerpt in the prompt: recall.
- `raft`: the gold excerpt shuffled among excerpts of *other* documents (with `raft_gold_share`
  of the rows holding the gold at all): pick the right source, or answer from memory.
- `open_book`: the excerpt, then the question (the row kdc always wrote; it keeps the sample's id,
  the other kinds add `:closed_book` / `:raft` so that every row id of the mix is unique).

Every choice (distractors, their order, which rows keep the gold) is a hash of (seed, row id), so
the rows are a pure function of the build, like the rest of the mix.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import PurePosixPath

from compiler.records import Chunk, Sample

ROW_KINDS = ("content", "closed_book", "raft", "open_book")
DEFAULT_SHARES = {"content": 0.25, "closed_book": 0.3, "raft": 0.25, "open_book": 0.2}
VIEW_ROW_KINDS = ("detailed_summary", "extractive_summary", "atomic_facts")  # mix.content_views default


def _h(*parts: object) -> bytes:
    return hashlib.sha256("\0".join(map(str, parts)).encode("utf-8")).digest()


def check_shares(shares: object) -> str | None:
    """Why `mix.knowledge_shares` is unusable, or None: known kinds, numbers, each ≥ 0.1, sum 1."""
    if not isinstance(shares, dict) or not shares:
        return "mix.knowledge_shares must map row kinds to shares, e.g. {content: 0.25, closed_book: 0.3, ...}"
    unknown = sorted(set(shares) - set(ROW_KINDS))
    if unknown:
        return f"mix.knowledge_shares: unknown row kind(s) {', '.join(map(str, unknown))} (known: {', '.join(ROW_KINDS)})"
    for k, v in shares.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.1 <= v <= 1:
            return f"mix.knowledge_shares.{k} must be a number from 0.1 to 1, got {v!r}"
    if abs(sum(shares.values()) - 1.0) > 1e-6:
        return f"mix.knowledge_shares must add up to 1, they add up to {sum(shares.values()):.3f}"
    return None


def _title(chunk: Chunk) -> str:
    return chunk.title or PurePosixPath(chunk.file).stem.replace("_", " ").replace("-", " ")


def _system(samples: Sequence[Sample]) -> str | None:
    return next((m["content"] for s in samples[:1] for m in s.messages if m.get("role") == "system"), None)


def _row(messages: list[dict], node_id: str, rid: str, row_kind: str) -> dict:
    return {"messages": messages, "metadata": {"node_id": node_id, "source": "synthetic", "id": rid,
                                               "row_kind": row_kind}}


def _with_user(sample: Sample, user: str) -> list[dict]:
    out = [dict(m) for m in sample.messages]
    for m in out:
        if m.get("role") == "user":
            m["content"] = user
    return out


def content_rows(node_id: str, chunks: Sequence[Chunk], samples: Sequence[Sample],
                 views: Sequence[dict] = (), view_kinds: Sequence[str] = VIEW_ROW_KINDS) -> list[dict]:
    """One row per chunk: the section (heading kept) as the assistant's target, then one per
    accepted view of a kind in `view_kinds`. Without planned chunks (a hand-built call), the
    distinct contexts of the samples stand in."""
    system = _system(samples)
    rows, seen = [], set()
    if not chunks:
        chunks = [Chunk("", "", "", 0, 0, s.record.context, "") for s in samples if s.record.context]
    for c in chunks:
        text = c.text.strip()
        if not text or text in seen:
            continue
        seen.add(text)
        topic = c.heading or "this part"
        where = f"{_title(c)}" if c.file else "the document"
        user = f"What does {where} say about {topic}?"
        msgs = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": user}, {"role": "assistant", "content": text}]
        rid = "content-" + hashlib.sha256(f"{node_id}\0{c.file}\0{c.start}\0{text}".encode()).hexdigest()[:20]
        rows.append(_row(msgs, node_id, rid, "content"))
    by_span = {(c.file, c.start): c for c in chunks}
    for v in views:
        if v.get("status") != "accepted" or v.get("kind") not in view_kinds:
            continue  # a rejected view (failed its schema or grounding) never teaches anything
        text = "\n".join(v.get("items") or []).strip()
        if not text or text in seen:
            continue
        seen.add(text)
        src = v.get("source") or {}
        chunk = by_span.get((src.get("file"), src.get("start")))
        rows.append(view_row(node_id, v, text, system, _title(chunk) if chunk else None))
    return rows


# The user turns of view rows, per view kind; one is picked by a hash of (node, view), so the
# student does not learn a single phrasing and the same build writes the same bytes.
VIEW_ASKS = {
    "detailed_summary": ("Summarise what {where} says about {topic}, in detail.",
                         "Give a detailed summary of the part of {where} on {topic}.",
                         "What does {where} explain about {topic}? Summarise it fully."),
    "extractive_summary": ("Quote the key passages of {where} on {topic}.",
                           "Which passages of {where} state the essentials of {topic}? Quote them.",
                           "Recite the most important sentences {where} gives about {topic}."),
    "atomic_facts": ("List the facts {where} states about {topic}, one per line.",
                     "What are the individual facts in {where} about {topic}? One per line.",
                     "State each fact {where} gives on {topic}, one a line."),
}


def view_row(node_id: str, view: dict, text: str, system: str | None, where: str | None = None) -> dict:
    """A content row whose target is an accepted view's text (its items, one per line, exactly
    the text its `sha256` names); `where` names the document (its title), else its file."""
    src = view.get("source") or {}
    file = str(src.get("file") or "")
    where = where or (PurePosixPath(file).stem.replace("_", " ").replace("-", " ") if file else "the document")
    topic = src.get("heading") or "this part"
    asks = VIEW_ASKS[view["kind"]]
    pick = int.from_bytes(_h("view-ask", node_id, view.get("sha256"), src.get("start"))[:4], "big") % len(asks)
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": asks[pick].format(where=where, topic=topic)},
        {"role": "assistant", "content": text}]
    rid = "content-" + hashlib.sha256(f"{node_id}\0{view['kind']}\0{file}\0{src.get('start')}\0{text}"
                                      .encode()).hexdigest()[:20]
    row = _row(msgs, node_id, rid, "content")
    row["metadata"]["view"] = {"kind": view["kind"], "sha256": view.get("sha256"), "request_key": view.get("request_key"),
                               "source": {k: src.get(k) for k in ("repo", "commit", "file", "start", "end", "sha256")}}
    return row


def closed_book_rows(node_id: str, samples: Sequence[Sample]) -> list[dict]:
    return [_row(_with_user(s, s.record.question), node_id, f"{s.id}:closed_book", "closed_book") for s in samples]


def open_book_rows(node_id: str, samples: Sequence[Sample]) -> list[dict]:
    rows = []
    for s in samples:
        ctx = (s.record.context or "").strip()
        user = next((m["content"] for m in s.messages if m.get("role") == "user"), s.record.question)
        if ctx and ctx not in user:
            user = f"{ctx}\n\n{user}"
        rows.append(_row(_with_user(s, user), node_id, s.id, "open_book"))
    return rows


def raft_rows(node_id: str, samples: Sequence[Sample], pool: Sequence[Chunk], *, distractors: int,
              gold_share: float, seed: int) -> list[dict]:
    """The gold excerpt among `distractors` excerpts of other documents (files other than the
    sample's own), in a seeded order; a row past `gold_share` (by hash) holds distractors only, so
    the answer must come from memory. No other document: no RAFT rows."""
    rows = []
    for s in samples:
        gold = (s.record.context or "").strip()
        doc = (s.metadata.get("document") or {}) if isinstance(s.metadata, dict) else {}
        own = (doc.get("repo"), doc.get("file"))
        others = [c for c in pool if (c.repo, c.file) != own and c.text.strip() != gold]
        if not others or not gold:
            continue
        picked = sorted(others, key=lambda c: _h(seed, "raft-pick", s.id, c.file, c.start))[:distractors]
        keep_gold = int.from_bytes(_h(seed, "raft-gold", s.id)[:4], "big") / 2**32 < gold_share
        texts = [c.text.strip() for c in picked] + ([gold] if keep_gold else [])
        texts.sort(key=lambda t: _h(seed, "raft-order", s.id, t))
        excerpts = "\n\n".join(f"<excerpt {i}>\n{t}\n</excerpt {i}>" for i, t in enumerate(texts, 1))
        user = (f"{excerpts}\n\nSome of the excerpts above may be irrelevant. {s.record.question}")
        rows.append(_row(_with_user(s, user), node_id, f"{s.id}:raft", "raft"))
    return rows


def leaf_rows(node_id: str, samples: Sequence[Sample], chunks: Sequence[Chunk], pool: Sequence[Chunk], *,
              distractors: int, gold_share: float, seed: int, views: Sequence[dict] = (),
              view_kinds: Sequence[str] = VIEW_ROW_KINDS) -> dict[str, list[dict]]:
    """Every candidate row of one knowledge leaf, by row kind (`views`: its views.jsonl lines)."""
    return {"content": content_rows(node_id, chunks, samples, views, view_kinds),
            "closed_book": closed_book_rows(node_id, samples),
            "raft": raft_rows(node_id, samples, pool, distractors=distractors, gold_share=gold_share, seed=seed),
            "open_book": open_book_rows(node_id, samples)}


def kind_counts(available: dict[str, int], shares: dict[str, float], cap: int | None = None,
                floor: int = 0) -> dict[str, int]:
    """Rows to draw per kind for one leaf: the smallest total in which every available row of
    every kind appears at least once at the configured shares (shares renormalised over the kinds
    that have rows), then capped/floored as a whole (mix.per_node_cap / per_node_floor)."""
    live = {k: shares.get(k, 0.0) for k, n in available.items() if n and shares.get(k, 0.0) > 0}
    if not live:
        return {k: 0 for k in available}
    norm = sum(live.values())
    live = {k: v / norm for k, v in live.items()}
    total = max(math.ceil(available[k] / v - 1e-9) for k, v in live.items())
    if cap is not None:
        total = min(total, cap)
    total = max(total, floor)
    counts = {k: max(1, round(live[k] * total)) if k in live else 0 for k in available}
    return counts


def coverage(chunks: Sequence[Chunk], samples: Sequence[Sample]) -> dict[str, object]:
    """A knowledge leaf's chunks, those grounding at least one accepted Q&A, and the share."""
    spans = {(d.get("file"), d.get("start"), d.get("end")) for s in samples
             for d in [s.metadata.get("document") or {}] if isinstance(d, dict)}
    covered = sum((c.file, c.start, c.end) in spans for c in chunks)
    return {"chunks": len(chunks), "covered": covered,
            "share": round(covered / len(chunks), 4) if chunks else 0.0}

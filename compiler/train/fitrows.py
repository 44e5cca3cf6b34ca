"""Rows that fit the training length: shorten the prompt, never the answer.

The trainer cuts a row longer than `max_length` at its end, and the end of a chat row is the
assistant's answer, the only part with a loss. Knowledge rows are long at the front (an open-book
excerpt, a RAFT row's gold excerpt among distractors), so a CPU run's 512 tokens would train many
of them on half an answer or none. Instead, the longest user turn loses text from its middle (its
opening and its end, where the question stands, are kept) until the row fits; only a row whose
answer alone is over the limit is still cut, and it is counted so that the user is told.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

ELLIPSIS = "\n[…]\n"
MIN_KEEP = 80  # characters of a shortened turn kept at least (its head and its tail together)


@dataclass(frozen=True)
class Fitted:
    rows: list[dict]
    shortened: int  # rows whose prompt lost text from its middle
    truncated: int  # rows still over the limit: the end of their answer is cut by the trainer


def _cut_middle(text: str, keep: int) -> str:
    """`text` with its middle replaced by an ellipsis, `keep` characters kept (a third at the head,
    the rest at the tail: the question closes the user turn)."""
    if keep >= len(text):
        return text
    head = keep // 3
    return text[:head] + ELLIPSIS + text[len(text) - (keep - head):]


def fit_rows(rows: Sequence[dict], length: Callable[[list[dict]], int], max_length: int) -> Fitted:
    """`rows` (each `{"messages": [...], ...}`) made to fit `max_length` tokens as counted by
    `length(messages)`; rows that fit are returned unchanged (the same objects)."""
    out: list[dict] = []
    shortened = truncated = 0
    for row in rows:
        messages = row["messages"]
        if length(messages) <= max_length:
            out.append(row)
            continue
        users = [i for i, m in enumerate(messages[:-1]) if m.get("role") == "user"]
        if not users:
            out.append(row)
            truncated += 1
            continue
        i = max(users, key=lambda k: len(messages[k]["content"]))
        text = messages[i]["content"]

        def with_keep(keep: int) -> list[dict]:
            return [*messages[:i], {**messages[i], "content": _cut_middle(text, keep)}, *messages[i + 1:]]

        lo, hi = min(MIN_KEEP, len(text)), len(text)  # binary search for the longest turn that fits
        if length(with_keep(lo)) > max_length:
            out.append(row)  # the answer alone is over the limit: nothing in the prompt can save it
            truncated += 1
            continue
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if length(with_keep(mid)) <= max_length:
                lo = mid
            else:
                hi = mid - 1
        out.append({**row, "messages": with_keep(lo)})
        shortened += 1
    return Fitted(out, shortened, truncated)

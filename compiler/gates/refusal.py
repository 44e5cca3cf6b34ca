"""Is a teacher's text a refusal? Declining the task, not being polite.

The old pattern matched any opening "I'm sorry" / "I apologize" / "I cannot", so empathy and
customer-support skills ("I'm sorry to hear your order was late", "I apologize for the
confusion", "I cannot stress enough...") lost most samples as `refusal` (review §4.3). A refusal
here needs a statement that the writer will not or cannot do something for the asker: an inability
or unwillingness phrase followed by a helping/providing verb, or an AI self-reference followed by
an inability. Emphatic "cannot" (stress, overstate, emphasise, recommend enough, wait) is not one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NOT = (r"(?:can(?:'|’)?t|cannot|can\s+not|won(?:'|’)?t|will\s+not|am\s+not\s+able\s+to|(?:'|’)m\s+not\s+able\s+to"
        r"|am\s+unable\s+to|(?:'|’)m\s+unable\s+to|unable\s+to|am\s+not\s+allowed\s+to|(?:'|’)m\s+not\s+allowed\s+to"
        r"|must\s+(?:decline|refuse)|have\s+to\s+decline|(?:do\s+not|don(?:'|’)?t)\s+(?:feel\s+comfortable|think\s+i\s+(?:can|should)))")
_DO = (r"(?:help|assist|provide|comply|fulfil+|answer|do\s+(?:that|this)|write|create|generate|produce|give|share"
       r"|offer|engage|support|complete|continue|discuss|respond|participate|perform|make|draft|supply|process"
       r"|with\s+(?:that|this)|decline|refuse|(?:this|that|your)\s+request"
       r"|writing|helping|providing|answering|sharing|doing|creating|generating)")
_EMPHATIC = re.compile(r"\b(?:cannot|can(?:'|’)?t|can\s+not)\s+(?:stress|overstate|emphasi[sz]e|recommend|thank|wait"
                       r"|believe|say\s+enough|praise|tell\s+you\s+how|imagine|help\s+but|be\s+(?:more|too))", re.I)
_OPENING = re.compile(
    r"^\W*(?:(?:unfortunately|regrettably)[,\s]+)?"
    r"(?:(?:i(?:'|’)?m\s+|i\s+am\s+|i\s+)?(?:sorry|afraid|apologi[sz]e)[^.!?\n]{0,40}?(?:,\s*|\s+but\s+|\s+))?"
    r"(?:but\s+)?(?:i|we)\s*(?:'|’)?\s*" + _NOT + r"\b[^.!?\n]{0,30}?\b" + _DO + r"\b", re.I)
_AI = re.compile(
    r"^\W*(?:(?:i(?:'|’)?m\s+|i\s+am\s+)?sorry[,.!]?\s*(?:but\s+)?)?as\s+an?\s+(?:ai|artificial\s+intelligence"
    r"|(?:large\s+)?language\s+model|ai\s+(?:language\s+)?(?:model|assistant))\s*,?\s*(?:i|we)\b[^.!?\n]{0,60}?"
    r"\b(?:" + _NOT + r"|do\s+not\s+have|don(?:'|’)?t\s+have|have\s+no)\b", re.I)


@dataclass(frozen=True)
class Refusal:
    """The evidence: the span of the text that reads as a refusal."""

    span: str
    start: int
    end: int


def find_refusal(text: str) -> Refusal | None:
    """The opening that declines the task, or None. Only the start of the text counts: a refusal
    leads with it, while an answer may mention what someone else cannot do."""
    head = (text or "").lstrip()[:400]
    offset = len(text or "") - len((text or "").lstrip())
    for pattern in (_AI, _OPENING):
        m = pattern.search(head)
        if m and not _EMPHATIC.search(m.group(0)):
            return Refusal(m.group(0).strip(), offset + m.start(), offset + m.end())
    return None


def is_refusal(text: str) -> bool:
    return find_refusal(text) is not None

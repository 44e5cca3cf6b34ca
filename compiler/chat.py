"""The chat layout of a training example, in one place: compile writes it, review rewrites it
after an expert's edit. No heavy imports, so `kdc review` needs no compile extra."""

from __future__ import annotations

import re
from collections.abc import Sequence

# A step's own numbering or bullet ("2.", "-", "Step 3:"), dropped before kdc numbers the steps.
_NUMBERED = re.compile(r"^\s*(?:\d+[.)]|[-*•]|step\s+\d+\s*[:.)-])\s*", re.I)


def user_turn(question: str, context: str | None) -> str:
    """The question, after its context for grounded skills and knowledge."""
    return f"{str(context).strip()}\n\n{question}" if context else str(question)


def assistant_turn(reasoning: Sequence[str], answer: str) -> str:
    """Numbered reasoning steps, a blank line, then `Answer: ...` (only that for a leaf without
    reasoning: the shape of its seed rows too)."""
    if not reasoning:
        return f"Answer: {str(answer).strip()}"
    steps = "\n".join(f"{i}. {_NUMBERED.sub('', s).strip()}" for i, s in enumerate(reasoning, 1))
    return f"{steps}\n\nAnswer: {str(answer).strip()}"

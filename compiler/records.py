"""Typed records that flow one way through the stages. Defined once, here.

taxonomy.Leaf -> plan.Task -> generate.Sample | Rejection -> gates (Verdict) -> mix.
Everything a record carries is JSON-serialisable through `asdict`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Severity = Literal["error", "warning"]
# foundational_skill leaves exist in the InstructLab taxonomy; they are validated but not compiled.
NodeKind = Literal["knowledge", "freeform_skill", "grounded_skill", "foundational_skill"]


@dataclass(frozen=True)
class Problem:
    """One finding of `kdc validate`, located in a file (1-based line and column)."""

    path: str
    line: int
    column: int
    severity: Severity
    rule: str
    message: str
    hint: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Leaf:
    """A taxonomy leaf: a folder holding qna.yaml. `node_id` is its folder path from the root."""

    node_id: str  # e.g. "compositional_skills/writing/haiku" ('/'-separated, relative to root)
    file: str  # path of qna.yaml, relative to the taxonomy root
    kind: NodeKind
    version: int
    content: dict[str, Any]
    content_hash: str  # sha256 of the file's bytes

    @property
    def ancestors(self) -> tuple[str, ...]:
        """Folder names from the root down to (and including) the leaf: prompt context."""
        return tuple(self.node_id.split("/"))

    def seeds(self) -> list["Seed"]:
        """Seed examples normalised across kinds and versions (knowledge: one per Q&A)."""
        out: list[Seed] = []
        for ex in self.content.get("seed_examples") or []:
            if not isinstance(ex, dict):
                continue
            if "questions_and_answers" in ex:
                for qa in ex.get("questions_and_answers") or []:
                    if isinstance(qa, dict):
                        out.append(Seed(str(qa.get("question", "")).strip(), str(qa.get("answer", "")).strip(),
                                        str(ex.get("context", "")).strip() or None))
            else:
                ctx = ex.get("context")
                out.append(Seed(str(ex.get("question", "")).strip(), str(ex.get("answer", "")).strip(),
                                str(ctx).strip() if ctx else None))
        return out


@dataclass(frozen=True)
class Chunk:
    """A span of a knowledge document at a commit: what a knowledge sample is grounded in."""

    repo: str
    commit: str
    file: str
    start: int  # character offsets into the document's text
    end: int
    text: str
    sha256: str
    title: str = ""  # the document's title (its first heading), for content rows
    heading: str = ""  # the section's heading path ("Packfiles > Delta chains")
    page: int = 0  # PDFs: the 1-based page the chunk starts on (0: the document has no pages)
    page_end: int = 0  # PDFs: the page it ends on


@dataclass(frozen=True)
class Seed:
    """An expert's example: question, answer and (grounded skills, knowledge) its context."""

    question: str
    answer: str
    context: str | None = None


@dataclass(frozen=True)
class Record:
    """What the teacher must return (schemas/record.json): chain-of-thought Q&A."""

    question: str
    reasoning: tuple[str, ...]
    answer: str
    context: str | None = None


@dataclass
class Sample:
    """An accepted (or candidate) training example with full provenance."""

    id: str
    node_id: str
    record: Record
    messages: list[dict[str, str]]
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        rec = self.record  # asdict's deep copy was a fifth of writing a build: the fields are immutable
        return {"id": self.id, "node_id": self.node_id, "messages": self.messages,
                "record": {"question": rec.question, "reasoning": rec.reasoning, "answer": rec.answer,
                           "context": rec.context}, "metadata": self.metadata}


@dataclass
class Rejection:
    """A teacher answer or candidate that did not make it, and why (a reason code)."""

    id: str
    node_id: str
    reason: str
    detail: str = ""
    raw: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)  # what the rejecting gate saw (span, score)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

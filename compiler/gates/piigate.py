"""What the PII gate looks at: only the text the teacher wrote (review §4.7).

A knowledge sample's context is the expert's document chunk: redacting it would break the
chunk's recorded sha256 and, with `pii: drop`, empty every leaf whose documents hold an e-mail
address. So the gate scans the question, the reasoning steps, the answer and (for grounded skills,
where the teacher invents it) the context; personal data the teacher quotes verbatim from the
expert's chunk is the expert's choice, not a leak, and is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from compiler.chat import assistant_turn, user_turn
from compiler.gates.pii import Finding, find_pii, redact
from compiler.records import Record, Sample


@dataclass(frozen=True)
class Located:
    """One finding in one teacher-written field (the evidence kept in rejected.jsonl)."""

    field: str  # question | answer | context | reasoning[i]
    finding: Finding

    def to_json(self) -> dict:
        f = self.finding
        return {"field": self.field, "kind": f.kind, "label": f.label, "start": f.start, "end": f.end}


def _fields(record: Record, kind: str) -> list[tuple[str, str]]:
    out = [("question", record.question), *((f"reasoning[{i}]", s) for i, s in enumerate(record.reasoning)),
           ("answer", record.answer)]
    if kind == "grounded_skill" and record.context:
        out.append(("context", record.context))
    return out


def teacher_pii(record: Record, kind: str, source: str | None, kinds: tuple[str, ...]) -> list[Located]:
    """Findings in the teacher-written fields, minus what the expert's source text itself holds."""
    expert = source if kind == "knowledge" and source else ""
    found = []
    for name, text in _fields(record, kind):
        found += [Located(name, f) for f in find_pii(text, kinds) if not (expert and f.text in expert)]
    return found


def redact_teacher_text(sample: Sample, kind: str, source: str | None, kinds: tuple[str, ...]) -> Sample:
    """The sample with its teacher-written fields redacted; the expert's chunk is kept as is and
    the chat turns are rebuilt from the redacted record (the system turn is kdc's own)."""
    expert = source if kind == "knowledge" and source else ""

    def scrub(text: str) -> str:
        return redact(text, [f for f in find_pii(text, kinds) if not (expert and f.text in expert)]) if text else text

    rec = sample.record
    context = scrub(rec.context) if kind == "grounded_skill" and rec.context else rec.context
    new = Record(scrub(rec.question), tuple(scrub(s) for s in rec.reasoning), scrub(rec.answer), context)
    messages = []
    for m in sample.messages:
        if m.get("role") == "user":
            m = {**m, "content": user_turn(new.question, new.context)}
        elif m.get("role") == "assistant":
            m = {**m, "content": assistant_turn(new.reasoning, new.answer)}
        messages.append(m)
    return replace(sample, record=new, messages=messages, metadata=dict(sample.metadata))

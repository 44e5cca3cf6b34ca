"""Sanity gate: empty, over-long or markup-laden samples, questions that ask nothing, missing
reasoning. Judged against what the node's own seeds show is normal there (NodeNorms)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from compiler.gates.config import GateConfig
from compiler.gates.diversity import words
from compiler.records import Record, Seed

_ASKS = frozenset("""what which who whom whose when where why how is are was were do does did can could
should would will shall may might has have had list name give write compose create draft describe
explain summarize summarise extract identify find calculate compute solve determine compare classify
rewrite translate convert generate provide outline tell suggest state define show turn make produce
rate evaluate choose pick select sort rank count estimate predict analyze analyse answer complete
fill please use using based given according read review format prepare plan design help imagine act
pretend respond reply assume suppose consider let check edit correct fix improve paraphrase shorten
expand continue recommend brainstorm propose critique assess discuss argue prove verify match label
tag split simplify proofread grade score transform parse return output print implement code debug
refactor optimize optimise advise teach walk break add remove replace insert delete apply build
construct derive draw sketch express reformat organize organise group categorize categorise get update
combine take first""".split())
_CLAUSE = re.compile(r"[.!:;,\n]")  # an instruction starts a sentence or a clause ("Given X, list Y")
_MARKUP = re.compile(
    r"\{\{|\}\}|\{%|%\}|\{#|#\}"  # leftover Jinja
    r"|<\|[^|>\s]{1,40}\|>"  # <|im_start|>, <|assistant|>, <|eot_id|>
    r"|</?(?:s|bos|eos|pad|unk)>|<(?:start|end)_of_turn>|\[/?INST\]|<</?SYS>>"
    r"|^\s*#{2,}\s*(?:instruction|response|input|output|system|user|assistant)\b"
    r"|^\s*(?:system|user|assistant|human|ai|model)\s*:",
    re.IGNORECASE | re.MULTILINE)


def _asks(question: str) -> bool:
    """A question mark, or a clause that opens with a question word or an instruction verb."""
    return "?" in question or any(words(c)[:1] and words(c)[0] in _ASKS for c in _CLAUSE.split(question))


def _markup(text: str) -> set[str]:
    return {m.group(0).strip().lower() for m in _MARKUP.finditer(text)}


@dataclass(frozen=True)
class NodeNorms:
    """What a node's own seed examples show is normal there: a skill whose prompts are statements
    (objection handling) or whose answers hold `{{ }}` (Helm, Jinja) is not junk for doing so."""

    asks: bool = True  # every seed question asks or instructs
    markup: frozenset[str] = frozenset()  # markup tokens the seeds themselves contain

    @classmethod
    def of(cls, seeds: list[Seed]) -> "NodeNorms":
        if not seeds:
            return cls()
        marks: set[str] = set()
        for seed in seeds:
            for text in (seed.question, seed.answer, seed.context or ""):
                marks |= _markup(text)
        return cls(all(_asks(seed.question) for seed in seeds if seed.question), frozenset(marks))


def check_sanity(rec: Record, cfg: GateConfig, norms: NodeNorms = NodeNorms(),
            reasoning: bool = True) -> tuple[str, str] | None:
    q, a = rec.question.strip(), rec.answer.strip()
    if not a:
        return "sanity-empty", "the answer is empty"
    if not q:
        return "sanity-question", "the question is empty"
    if len(q) < cfg.min_question_chars or len(q) > cfg.max_question_chars:
        return "sanity-length", (f"question is {len(q)} characters, outside "
                                 f"{cfg.min_question_chars}..{cfg.max_question_chars}")
    if len(a) > cfg.max_answer_chars:
        return "sanity-length", f"answer is {len(a)} characters, over {cfg.max_answer_chars}"
    if rec.context and len(rec.context) > cfg.max_context_chars:
        return "sanity-length", f"context is {len(rec.context)} characters, over {cfg.max_context_chars}"
    for name, text in (("question", q), ("answer", a), ("context", rec.context or ""),
                       *((f"reasoning step {i + 1}", s) for i, s in enumerate(rec.reasoning))):
        for m in _MARKUP.finditer(text):
            if m.group(0).strip().lower() not in norms.markup:
                return "sanity-markup", f"leftover template markup or role tag {m.group(0).strip()!r} in the {name}"
    if norms.asks and not _asks(q):
        return "sanity-question", "the question neither asks nor instructs anything"
    steps = [s for s in rec.reasoning if s and s.strip()]
    if reasoning and len(steps) < cfg.min_reasoning_steps:  # a leaf without reasoning asks for none
        return "sanity-reasoning", f"{len(steps)} reasoning step(s), want at least {cfg.min_reasoning_steps}"
    return None

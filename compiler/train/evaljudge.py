"""`kdc eval --judge`: a pairwise verdict per held-out question from any litellm model, asked twice
with the answers swapped; a side wins only when both orders agree (position bias becomes a tie).

The judge is asked through the one LLM client (compiler/llm/teacher.py), so it gets the same
retries, Retry-After, endpoint handling, breaker and secret scrubbing as generation; the two orders
are asked concurrently. The prompt (templates/eval_judge.j2) is rendered in a sandbox with the
question, reference and answers passed as data.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from compiler.errors import TeacherError
from compiler.resources import data_dir

if TYPE_CHECKING:
    from compiler.llm.teacher import Teacher
    from compiler.train.evaluate import EvalItem

JUDGE_TEMPLATE = "eval_judge.j2"
MAX_TOKENS = 300
HINT = "check --judge and --judge-api-base (API keys come from the environment)"


@dataclass(frozen=True)
class Judge:
    model: str
    api_base: str | None = None
    timeout: float = 120.0
    retries: int = 2  # on rate limits, timeouts, connection and server errors


def judge_pair(judge: Judge, item: "EvalItem", tuned: str, base: str) -> str:
    """'model', 'base' or 'tie': asked in both orders, a side wins only when both verdicts agree."""
    prompts = [_prompt(item, tuned, base), _prompt(item, base, tuned)]  # A = tuned, then A = base

    async def both() -> list[str | None]:
        return list(await asyncio.gather(*(_ask(judge, p) for p in prompts)))

    first, second = asyncio.run(both())
    seen = {"A": "model", "B": "base"}.get(first), {"A": "base", "B": "model"}.get(second)
    return seen[0] if seen[0] is not None and seen[0] == seen[1] else "tie"


def _prompt(item: "EvalItem", answer_a: str, answer_b: str) -> str:
    from jinja2 import FileSystemLoader, StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(loader=FileSystemLoader(str(data_dir("templates"))), autoescape=False,
                               undefined=StrictUndefined)
    return env.get_template(JUDGE_TEMPLATE).render(question=item.question, context=item.context or "",
                                                   reference=item.answer, answer_a=answer_a,
                                                   answer_b=answer_b).strip()


@lru_cache(maxsize=8)
def _client(judge: Judge) -> "Teacher":
    """One client per judge setting, kept for the whole eval (its connections and breaker state)."""
    from compiler.llm.teacher import Teacher

    try:
        return Teacher(judge.model, api_bases=[judge.api_base] if judge.api_base else None, timeout=judge.timeout,
                       max_retries=judge.retries, concurrency=2, sampling={"temperature": 0.0}, workers=1)
    except TeacherError as exc:
        raise TeacherError(f"the judge {judge.model!r} cannot be used: {exc.message}", hint=exc.hint) from None


async def _ask(judge: Judge, prompt: str) -> str | None:
    from compiler.llm.teacher import TeacherFailure

    try:
        done = await _client(judge).complete([{"role": "user", "content": prompt}], None, label="eval judge",
                                             params={"max_tokens": MAX_TOKENS})
    except TeacherFailure as exc:  # details are scrubbed by the client
        raise TeacherError(f"the judge {judge.model!r} failed: {exc.reason}: {exc.detail}", hint=HINT) from None
    except TeacherError as exc:
        raise TeacherError(f"the judge {judge.model!r} failed: {exc.message}", hint=HINT) from None
    return parse_verdict(done.text) if done is not None else None


def parse_verdict(text: str) -> str | None:
    """'A', 'B', 'tie' from the judge's JSON reply ({"winner": ...}), None when unreadable."""
    m = re.search(r"\{.*\}", text, re.S)
    if not m:
        return None
    try:
        winner = str(json.loads(m.group(0)).get("winner", "")).strip()
    except (ValueError, AttributeError):
        return None
    return {"a": "A", "b": "B", "tie": "tie"}.get(winner.lower())

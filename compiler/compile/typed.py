"""Typed mode in the build (issue 15 item 3): one teacher call asks for K typed questions, and its
answer becomes K candidates, each screened and gated as its own sample (quotas count samples).

The call stays the unit of caching and of the build's ordering (one sample index, one cache key);
each record gets a request with `item = j` (its own sample id) and is gated in (index, j) order,
so byte-identity at any concurrency holds as before.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from compiler.compile.generate import Request, split_typed
from compiler.gates.judging import screen
from compiler.llm.teacher import Completion

if TYPE_CHECKING:
    from compiler.compile.scheduler import Scheduler as Builder


@dataclass
class Items:
    """The screened records of one typed call: (request for record j, its answer, screened)."""

    parts: list[tuple[Request, Any, Any]]


async def screen_typed(builder: "Builder", req: Request, answer: Any) -> Any:
    """Like judging.screen, for a typed call: every record screened concurrently."""
    if not req.task.questions:
        return await screen(builder, req, answer)
    if not isinstance(answer, Completion):
        return Items([(req, answer, None)])
    pairs = split_typed(req, answer)
    done = await asyncio.gather(*(screen(builder, sub, a) for sub, a in pairs))
    return Items([(sub, a, s) for (sub, a), s in zip(pairs, done)])


def unpack(req: Request, answer: Any, screened: Any) -> list[tuple[Request, Any, Any]]:
    """What the build gates, in order: the records of a typed call, or the one result."""
    return screened.parts if isinstance(screened, Items) else [(req, answer, screened)]

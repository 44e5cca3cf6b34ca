"""`kdc compile --batch`: before each round, its generation requests go to the provider's batch
API (compiler/llm/batch.py) and every answer is stored in the build's cache under the key a live
answer would have; the ordinary round then runs and finds them there.

Why a pass before the round instead of a batch-aware scheduler: the round then decides exactly as
on a re-run of a live build (all cache hits), so gates, dedup, provenance and the bytes written are
those of live mode with no second code path. The requests are computed as the scheduler computes
them (same plan, same `prepare`), so the keys match. Requests a node may not need (it fills up
early in the round) are batched too: like a live run's surplus, their answers stay in the cache.

Crash-safe: the batch id and its requests are stored (cache table `batches`) the moment the batch
is created; a restarted compile finds the open batch covering the round's requests, polls it and
reads it back instead of submitting again. Failures are never silent: a batch the provider refuses,
a failed, cancelled or expired batch, and each item in its errors file (or absent from its output)
are logged with a count and asked live in the same round by the scheduler (the answer is simply
not in the cache), with the live retry policy. Augmentation views and the LLM judge stay live.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from compiler.compile.generate import Request, prepare
from compiler.compile.plan import task_for
from compiler.errors import TeacherError
from compiler.llm import backend
from compiler.llm.batch import BatchClient, BatchError, ItemFailure, answer_of, batch_price, supports_batch

if TYPE_CHECKING:
    from compiler.compile.scheduler import NodeState, Scheduler

log = logging.getLogger("kdc.batch")
MAX_LINES = 50_000  # requests per batch (OpenAI's limit); a bigger round is split into several
RETRIEVE_TRIES = 5  # consecutive failed retrieves before the round goes live (the batch stays open)


@dataclass
class BatchStats:
    """What batch mode did in this run (the manifest's totals.batch)."""

    batches: int = 0  # created in this run
    resumed: int = 0  # created by an earlier run, read back in this one
    requests: int = 0  # submitted in this run
    answered: int = 0  # answers stored from batches
    failed: Counter = field(default_factory=Counter)  # items without an answer, by code (asked live)
    cost_usd: float = 0.0
    cost_known: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"batches": self.batches, "resumed": self.resumed, "requests": self.requests,
                "answered": self.answered, "failed_live": dict(sorted(self.failed.items())),
                "cost_usd": round(self.cost_usd, 6) if self.cost_known else None}


def check(cfg, teacher) -> None:
    """Refuse --batch for a teacher without an OpenAI-compatible batch API, before any call."""
    if cfg.batch and not supports_batch(backend.load(), teacher.model):
        raise TeacherError(f"--batch needs a provider with an OpenAI-compatible batch API; {teacher.model} has none",
                           hint="use an openai/, hosted_vllm/ or litellm_proxy/ teacher, or compile without --batch")


async def prefetch(sched: "Scheduler", plan: list[tuple["NodeState", int]]) -> None:
    """Answer the round's uncached requests through the batch API (see the module docstring)."""
    lt = backend.load()
    stats = sched.batch_stats = sched.batch_stats or BatchStats()
    reqs = [prepare(task_for(st.lp, i, sched.cfg), sched.prompts, sched.cfg.teacher, sched.cfg.sampling,
                    logprobs=sched.teacher.logprobs) for st, i in plan if st.need > 0]
    wanted = {r.key: r for r in reqs if not sched.cache.has(r.key)}
    if not wanted or sched.teacher.unavailable:
        return
    client = BatchClient(lt, sched.teacher)
    for batch_id, requests in sched.cache.open_batches():
        if wanted.keys() & requests.keys():
            log.info("resuming batch %s (%d requests) from the build's cache", batch_id, len(requests))
            stats.resumed += 1
            await _read_back(sched, lt, client, batch_id, requests, stats)
    wanted = {k: r for k, r in wanted.items() if not sched.cache.has(k)}
    if not wanted or _over_cap(sched, lt, wanted.values()):
        return
    keys = list(wanted)
    submitted: list[tuple[str, dict[str, tuple[str, int]]]] = []
    for start in range(0, len(keys), MAX_LINES):  # all parts submitted first: the provider runs them together
        part = [wanted[k] for k in keys[start:start + MAX_LINES]]
        requests = {r.key: (r.task.node_id, r.task.sample_index) for r in part}
        lines = [_line(lt, sched, r) for r in part]
        try:
            batch_id = await client.submit(lines, {"kdc": "compile", "requests": str(len(lines))})
        except BatchError as exc:
            log.warning("the batch API refused %d of the round's requests (%s); asking them live", len(lines),
                        exc.message)
            stats.failed["batch-refused"] += len(lines)
            continue
        sched.cache.put_batch(batch_id, requests)  # from here on a restart resumes this batch
        stats.batches += 1
        stats.requests += len(lines)
        log.info("batch %s submitted: %d requests", batch_id, len(lines))
        submitted.append((batch_id, requests))
    for batch_id, requests in submitted:
        await _read_back(sched, lt, client, batch_id, requests, stats)


def _line(lt: Any, sched: "Scheduler", req: Request) -> dict[str, Any]:
    from compiler.llm.batch import request_line

    return request_line(lt, sched.teacher, req.key, req.rendered.messages, req.response_format, req.sampling)


def _over_cap(sched: "Scheduler", lt: Any, reqs) -> bool:
    """--max-cost: a round whose worst case would pass the cap goes live (the live path stops at it)."""
    if sched.cfg.max_cost is None:
        return False
    worst = 0.0
    for r in reqs:
        tokens = sched.teacher.count_tokens(r.rendered.messages)
        est = batch_price(lt, sched.teacher.model, tokens, sched.cfg.max_tokens)
        worst += est if est is not None else (sched.teacher.price(tokens, sched.cfg.max_tokens) or 0.0)
    if sched.spent + worst <= sched.cfg.max_cost:
        return False
    log.warning("the round's batch (worst case %.4f USD) would pass --max-cost; asking live, up to the cap", worst)
    return True


async def _read_back(sched: "Scheduler", lt: Any, client: BatchClient, batch_id: str,
                     requests: dict[str, tuple[str, int]], stats: BatchStats) -> None:
    """Poll until the batch ends, then store every answer; what has none is counted and left to live."""
    state, tries, last = None, 0, ""
    while state is None or not state.done:
        try:
            state = await client.retrieve(batch_id)
            tries = 0
        except BatchError as exc:
            tries += 1
            if exc.status == 404 or tries >= RETRIEVE_TRIES:
                log.warning("batch %s cannot be read (%s); its %d requests are asked live", batch_id, exc.message,
                            len(requests))
                if exc.status == 404:
                    sched.cache.close_batch(batch_id, "lost")
                stats.failed["batch-unreadable"] += sum(1 for k in requests if not sched.cache.has(k))
                return
        if state is not None and state.status != last:
            last = state.status
            log.info("batch %s: %s (%s)", batch_id, state.status,
                     ", ".join(f"{k} {v}" for k, v in state.counts.items()) or "no counts yet")
        if state is None or not state.done:
            await asyncio.sleep(sched.cfg.batch_poll)
    try:
        items = await client.lines(state.output_file_id) + await client.lines(state.error_file_id)
    except BatchError as exc:
        log.warning("batch %s: its results cannot be read (%s); asking live", batch_id, exc.message)
        stats.failed["results-unreadable"] += len(requests)
        return  # left open: a later run may read it
    seen: dict[str, Any] = {}  # custom_id (the cache key) -> its answer; an answer beats a failure
    for item in items:
        key = item["custom_id"]
        if key in requests and (key not in seen or isinstance(seen[key], ItemFailure)):
            seen[key] = answer_of(lt, item, sched.teacher)
    failed: Counter = Counter()
    for key, (node_id, index) in requests.items():
        answer = seen.get(key)
        if answer is None:
            failed["expired" if state.status == "expired" else (state.status if state.status != "completed"
                                                                else "missing")] += 1
        elif isinstance(answer, ItemFailure):
            failed[answer.code] += 1
        else:
            sched.cache.put(key, node_id, index, answer.to_cache())
            stats.answered += 1
            if answer.cost_usd is None:
                stats.cost_known = False
            else:
                stats.cost_usd += answer.cost_usd
                sched.spent += answer.cost_usd
    sched.cache.close_batch(batch_id, state.status)
    stats.failed.update(failed)
    if failed:
        why = ", ".join(f"{n} {code}" for code, n in sorted(failed.items()))
        log.warning("batch %s ended %s: %d of %d requests without an answer (%s)%s; they are asked live",
                    batch_id, state.status, sum(failed.values()), len(requests), why,
                    f": {state.errors}" if state.errors else "")


def dry_run_price(teacher, totals: dict[str, Any]) -> dict[str, Any]:
    """The plan's generation cost at batch prices: litellm's `*_batches` prices, else half the live
    price (the usual batch discount), else unknown. The judge and augmentation views stay live."""
    lt = backend.load()
    p, c = int(totals.get("prompt_tokens") or 0), int(totals.get("completion_tokens") or 0)
    cost = batch_price(lt, teacher.model, p, c) if teacher.price_known else None
    if cost is not None:
        return {"cost_usd": cost, "basis": "litellm's batch prices"}
    live = teacher.price(p, c)
    if live is not None and supports_batch(lt, teacher.model):
        return {"cost_usd": live / 2, "basis": "50 % of the live price (no batch price in litellm's map)"}
    return {"cost_usd": None, "basis": "unknown (no price for this model)"}

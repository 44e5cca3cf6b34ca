"""The scheduler of `kdc compile`: rounds with quota top-up, attempt budgets, cost reservation
and cache-hit accounting, then each answer gated in the fixed order and the expert's review
verdicts applied. It produces per-node state; compiler/compile/build.py turns that into the
build directory through compiler/io/builddir.py.

Determinism is the design constraint. Requests of a round are launched concurrently, but their
results are gated strictly in (node, sample index) order, and the next round's size depends only
on gated results; with the teacher cache this makes a re-run on an unchanged tree issue zero
teacher calls and write byte-identical datasets, and a run killed at any moment resume to the
same result.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import json
import math
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from compiler.compile.generate import Request, ask, chat_messages, prepare, provenance, ready_validators
from compiler.compile.plan import LeafPlan, round_calls, task_for
from compiler.compile.progress import NodeProgress, Progress
from compiler.compile.prompts import Prompts
from compiler.config import CompileConfig
from compiler.compile import augment, typed
from compiler.io.builddir import load_verdicts
from compiler.llm.cache import Cache
from compiler.llm.teacher import Completion, Teacher, TeacherFailure
from compiler.records import Record, Rejection, Sample
from compiler.taxonomy.tree import Taxonomy

if TYPE_CHECKING:
    from compiler.gates.chain import Gatekeeper  # heavy (numpy, datasketch): built once requests are out
    from compiler.gates.config import GateConfig

STOP_BUDGET, STOP_COST, STOP_UNAVAILABLE = "budget", "max-cost", "teacher-unavailable"
REVIEW_REJECTED = "review-rejected"
# Before `warm_up` takes the GIL, the I/O thread gets this long alone to send the first requests:
# 32 of them at a loopback teacher reached it over 55-65 ms without it, 9-22 ms with it.
SEND_GRACE_S = 0.01

# ------------------------------------------------------------------------------- state
@dataclass
class NodeState:
    lp: LeafPlan
    progress: NodeProgress
    next_index: int = 0
    launched: int = 0
    accepted: list[Sample] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cost_known: bool = True
    stopped: str | None = None
    teacher_calls: int = 0  # answers fetched from the teacher in this run
    teacher_tokens: Counter = field(default_factory=Counter)  # ... their prompt and completion tokens,
    # surplus answers included (a quota met while they were in flight): what the teacher processed
    cache_hits: int = 0
    hits_gated: int = 0  # cache hits of this run already decided by _gate (see Scheduler._ask)
    sent: int = 0  # this node's requests put in flight this run (each gets its place in gate order)
    decided: int = 0  # ... of which _gate has seen; sent - decided are ahead of the next in line
    gated: asyncio.Event = field(default_factory=asyncio.Event)
    scores: dict[str, list] = field(default_factory=lambda: {"grounding": [], "judge": []})
    reviewed: Counter = field(default_factory=Counter)

    @property
    def need(self) -> int:
        return self.lp.target - len(self.accepted)

    @property
    def used(self) -> int:
        return len(self.accepted) + len(self.rejected)


# ------------------------------------------------------------------------------- the scheduler
class Scheduler:
    """Asks the teacher for every node's quota and decides each answer; holds no file open but
    the cache (out/.kdc/cache.sqlite) and writes nothing else."""

    def __init__(self, cfg: CompileConfig, taxonomy: Taxonomy, plans: list[LeafPlan], prompts: Prompts,
                 teacher: Teacher, gate_config: GateConfig, out: Path, progress: Progress,
                 timed: Callable[[Callable, str], Callable] | None = None):
        self.cfg, self.taxonomy, self.prompts, self.teacher = cfg, taxonomy, prompts, teacher
        self.progress = progress
        self.nodes = {lp.node_id: NodeState(lp, NodeProgress(lp.node_id, lp.target)) for lp in plans}
        self.cache = Cache(out / ".kdc" / "cache.sqlite")
        self.gate_config = gate_config
        self._timed = timed  # the profile's timer for the gatekeeper's screening (compile/profile.py)
        self.verdicts = load_verdicts(out)
        self.spent = 0.0  # USD actually spent in this run (known prices)
        self.reserved = 0.0  # USD reserved by requests in flight (worst case)
        self.cost_stop = False
        self.batch_stats = None  # --batch: compile/batchrun.py's BatchStats

    @functools.cached_property
    def gatekeeper(self) -> Gatekeeper:
        """The gate chain, built on first use: `_generate` builds it while the first requests are
        in flight (it imports numpy and datasketch and fingerprints every seed: ~0.15 s that the
        first request need not wait for)."""
        from compiler.gates.chain import Gatekeeper

        gk = Gatekeeper(self.gate_config, self.taxonomy, {n: s.lp.train_seeds for n, s in self.nodes.items()},
                        {n: s.lp.eval_seeds for n, s in self.nodes.items()}, judge_cache=self.cache)
        if self._timed is not None:
            gk.screen = self._timed(gk.screen, "screen")
        return gk

    def _judging(self):
        """The judge's client for the run (its workers fork before any event loop starts)."""
        return self.gatekeeper.judging() if self.gate_config.judge else contextlib.nullcontext()

    # -- generation ------------------------------------------------------------------------
    def run(self) -> None:
        """Generate and gate until every node is full or stopped; the cache is closed after."""
        # What exists now (litellm, datasets, the plan: ~400k objects) outlives generation. Frozen,
        # the collector skips it: a full collection costs microseconds instead of ~250 ms during
        # which no answer is read and no request sent.
        gc.freeze()
        try:
            with self.teacher, self._judging():  # worker processes are forked before any event loop starts
                self.progress.start([s.progress for s in self.nodes.values()])
                try:
                    asyncio.run(self._generate())
                finally:
                    self.progress.finish()
        finally:
            gc.unfreeze()
            self.cache.close()

    async def _generate(self) -> None:
        """Rounds until every node is full or out of budget. Requests run ahead of the gate through
        a window of a few times the concurrency (bounded memory on huge plans, a full pipe for the
        teacher); results are gated strictly in plan order.

        A node's next round is planned as soon as its own round is decided, not when every node's
        is: the pipe never drains between rounds. The order stays what whole rounds give (the
        rest of round r in node order, then round r+1 in node order: each node's items are
        contiguous and its round ends in node order), and a node's next round depends only on its
        own decisions, so the bytes are the same as with global rounds at any concurrency."""
        window = max(64, 4 * self.teacher.concurrency)
        await augment.augment_leaves(self)  # views first, so the units and quotas are known
        todo: deque[tuple[NodeState, int]] = deque()
        left: Counter = Counter()  # per node: items of its current round not yet resolved
        ready = sorted(self.nodes)  # nodes whose next round is to be planned
        pending: deque[tuple[Request, asyncio.Future]] = deque()

        def resolved(st: NodeState) -> None:
            left[st.lp.node_id] -= 1
            if left[st.lp.node_id] == 0:
                ready.append(st.lp.node_id)

        def fill() -> None:
            while len(pending) < window and todo:
                st, index = todo.popleft()
                if st.need <= 0:
                    resolved(st)  # the node filled up earlier: not sent (and no next round)
                    continue
                req = prepare(task_for(st.lp, index, self.cfg), self.prompts, self.cfg.teacher, self.cfg.sampling,
                              logprobs=self.teacher.logprobs)
                pending.append((req, asyncio.ensure_future(self._ask_screened(req, st.sent))))
                st.sent += 1

        warm = True  # the first requests go out before the gates are built
        try:
            while True:
                # batch mode keeps whole rounds: one batch a round, not one per node and round
                if ready and not (self.cfg.batch and (todo or pending)):
                    plan = self._next_round(sorted(ready))
                    ready.clear()
                    if self.cfg.batch and plan:  # the round's answers through the batch API, into the cache
                        from compiler.compile.batchrun import prefetch

                        await prefetch(self, plan)
                    todo.extend(plan)
                    left.update(st.lp.node_id for st, _ in plan)
                fill()
                if warm:
                    warm = False
                    await asyncio.sleep(SEND_GRACE_S)  # the first requests reach the wire
                    self.warm_up()
                if not pending:
                    if ready:
                        continue
                    return
                req, fut = pending.popleft()
                answer, screened = await fut
                for sub, sub_answer, sub_screened in typed.unpack(req, answer, screened):
                    self._gate(sub, sub_answer, sub_screened)  # a typed call: each of its K records
                st = self.nodes[req.task.node_id]
                st.decided += 1
                if isinstance(answer, Completion) and answer.cached:
                    st.hits_gated += 1
                st.gated.set()
                resolved(st)
        except BaseException:
            for _, fut in pending:
                fut.cancel()
            await asyncio.gather(*(fut for _, fut in pending), return_exceptions=True)
            raise

    def warm_up(self) -> None:
        """What gating the first answer needs, made while the first requests are out: the gate
        chain, the taxonomy's tree (networkx), the teacher's price and the answers' validators.
        Ready before the first answer arrives at a teacher's usual latency; each is built once,
        here or on first use."""
        self.gatekeeper
        self.taxonomy.graph
        self.teacher.price_known
        ready_validators([st.lp for st in self.nodes.values()])
        gc.freeze()  # what it built (modules, seed fingerprints) lives as long as the run: see `run`

    def _next_round(self, node_ids: list[str]) -> list[tuple[NodeState, int]]:
        """The next round's (node, sample index) pairs of these nodes, in their order: per node
        enough new indexes to fill its quota at the acceptance rate seen so far, within its
        attempt budget."""
        plan: list[tuple[NodeState, int]] = []
        for node_id in node_ids:
            st = self.nodes[node_id]
            if st.need <= 0 or st.stopped:
                continue
            if self.teacher.unavailable:
                st.stopped = STOP_UNAVAILABLE
                continue
            if self.cost_stop:
                st.stopped = STOP_COST
                continue
            room = st.lp.budget - st.launched
            if room <= 0:
                st.stopped = STOP_BUDGET
                continue
            rate = 1.0 if st.used == 0 else max(0.2, len(st.accepted) / st.used)
            n = min(room, math.ceil(st.need / rate / max(1, st.lp.questions)))  # K records a typed call
            n = round_calls(st.lp, n, self.cfg.augment.wave_calls)  # typed: one wave a round
            st.lp.note_accepted(st.accepted)  # "do not repeat" = accepted in earlier rounds
            plan.extend((st, st.next_index + i) for i in range(n))
            st.next_index += n
            st.launched += n
        return plan

    async def _ask(self, req: Request) -> Completion | TeacherFailure | None:
        """The answer (cache first), a failure, or None when the request was not sent (quota
        already met, cost cap, teacher unavailable)."""
        st = self.nodes[req.task.node_id]
        hit = self.cache.get(req.key)
        if hit is not None:
            st.cache_hits += 1
            return Completion.from_cache(hit)
        # Before paying for a miss, let the node's earlier cache hits be decided: they may fill the
        # quota. Without this, a re-run (all hits) would race past the quota and ask the teacher for
        # requests the first run never needed. Only earlier hits are waited for (they are gated
        # before this request), so live requests still run ahead of the gate.
        earlier = st.cache_hits
        while st.hits_gated < earlier and st.need > 0:
            st.gated.clear()
            await st.gated.wait()
        if st.need <= 0:
            return None
        reserve = 0.0
        if self.cfg.max_cost is not None:
            est = self.teacher.price(self.teacher.count_tokens(req.rendered.messages), self.cfg.max_tokens)
            reserve = est or 0.0
            if self.spent + self.reserved + reserve > self.cfg.max_cost:
                self.cost_stop = True
                return None
            self.reserved += reserve
        st.progress.in_flight += 1
        self.progress.update(st.progress)
        try:
            answer, _ = await ask(req, self.teacher, self.cache, should_run=lambda: st.need > 0, read_cache=False)
        finally:
            self.reserved -= reserve
            st.progress.in_flight -= 1
        if isinstance(answer, Completion):
            st.teacher_calls += 1
            st.teacher_tokens.update(prompt=answer.prompt_tokens, completion=answer.completion_tokens)
            self.spent += answer.cost_usd or 0.0
        elif isinstance(answer, TeacherFailure):
            st.progress.failures += 1
        self.progress.update(st.progress)
        return answer

    async def _ask_screened(self, req: Request, place: int) -> tuple[Completion | TeacherFailure | None, Any]:
        """The answer, and as soon as it arrives its order-independent gates and the judge
        (compiler/gates/judging.py: why this is safe for byte-identity). A cached answer arrives at
        once, before the ones ahead of it are decided; it is screened (and maybe judged) only once
        fewer than `need` of its node are ahead of it, so a re-run never judges a candidate the
        quota cannot reach (the earlier run never judged it either)."""
        answer = await self._ask(req)
        if isinstance(answer, Completion) and answer.cached:
            st = self.nodes[req.task.node_id]
            while (place - st.decided) * max(1, st.lp.questions) >= st.need > 0:
                st.gated.clear()
                await st.gated.wait()
        return answer, await typed.screen_typed(self, req, answer)

    def _gate(self, req: Request, answer: Completion | TeacherFailure | None, screened: Any) -> None:
        """Decide one result, in the fixed order: a rejection with its reason, or an accepted sample."""
        st = self.nodes[req.task.node_id]
        if answer is None or st.need <= 0:
            return  # not sent, or surplus beyond the quota (kept in the cache for later runs)
        if isinstance(answer, TeacherFailure):
            if answer.reason == STOP_UNAVAILABLE:
                st.stopped = STOP_UNAVAILABLE
                return
            meta = provenance(req, st.lp, None, attempts=answer.attempts)
            self._reject(st, Rejection(req.sample_id, st.lp.node_id, answer.reason, answer.detail, None, meta))
            return
        st.prompt_tokens += answer.prompt_tokens
        st.completion_tokens += answer.completion_tokens
        st.progress.tokens += answer.prompt_tokens + answer.completion_tokens
        if answer.cost_usd is None:
            st.cost_known = False
        else:
            st.cost_usd += answer.cost_usd
        out = screened if isinstance(screened, (Sample, Rejection)) else screened.sample
        if isinstance(out, Rejection):
            self._reject(st, out)
            return
        verdict = self.verdicts.get(out.id)
        if verdict is not None:
            st.reviewed["reviewed"] += 1
            review = {k: verdict.get(k) for k in ("verdict", "by", "at", "why")}
            if verdict.get("verdict") == "reject":
                st.reviewed["rejected"] += 1
                out.metadata["review"] = review
                self._reject(st, Rejection(out.id, out.node_id, REVIEW_REJECTED,
                                           f"rejected in review by {verdict.get('by')}: {verdict.get('why') or ''}".strip(),
                                           json.dumps(out.to_json()["record"], ensure_ascii=False), out.metadata))
                return
            if verdict.get("verdict") == "edit" and isinstance(verdict.get("edited"), dict):
                out = _edited(out, verdict["edited"], st.lp)
                out.metadata["review"] = review
                self._accept(st, out, {})
                return
            out.metadata["review"] = review
        v = self.gatekeeper.decide(screened)
        if v.accepted:
            self._accept(st, v.sample, v.scores)
        else:
            sample = v.sample
            sample.metadata["gates"] = v.scores
            self._reject(st, Rejection(sample.id, sample.node_id, v.reason or "rejected", v.detail,
                                       json.dumps(sample.to_json()["record"], ensure_ascii=False),
                                       sample.metadata, v.evidence))

    def _accept(self, st: NodeState, sample: Sample, scores: dict) -> None:
        sample.metadata["gates"] = scores
        if isinstance(scores.get("grounding"), (int, float)):
            st.scores["grounding"].append(scores["grounding"])
        judge = scores.get("judge")
        if isinstance(judge, dict) and judge:
            vals = [v for v in judge.values() if isinstance(v, (int, float))]
            if vals:
                st.scores["judge"].append(round(sum(vals) / len(vals), 3))
        st.accepted.append(sample)
        st.progress.accepted = len(st.accepted)
        st.progress.done = st.need <= 0
        self.progress.update(st.progress)

    def _reject(self, st: NodeState, rejection: Rejection) -> None:
        st.rejected.append(rejection)
        st.progress.rejected = len(st.rejected)
        self.progress.update(st.progress)



def _edited(sample: Sample, edited: dict[str, Any], lp: LeafPlan) -> Sample:
    rec = sample.record
    steps = edited.get("reasoning")
    new = Record(question=str(edited.get("question") or rec.question),
                 reasoning=tuple(str(s) for s in steps) if isinstance(steps, list) and steps else rec.reasoning,
                 answer=str(edited.get("answer") or rec.answer), context=rec.context)
    return Sample(sample.id, sample.node_id, new, chat_messages(lp, new), dict(sample.metadata))


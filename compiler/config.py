"""Compile settings: kdc.yaml (at the taxonomy root, or --config) merged with the command line.

The command line wins over the file, the file over the defaults. Values are type-checked with a
located error (file:line:col) so a typo in kdc.yaml is caught before any teacher call. Secrets
never live here: API keys come from each provider's usual environment variable, read by litellm
at call time, and `effective()` (what the manifest records) strips credentials from URLs.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from compiler.augconfig import AugmentConfig, parse_augment
from compiler.errors import ConfigError
from compiler.io.yamlload import YamlLoadError, load_file, mark_of, node_at

log = logging.getLogger("kdc.config")

CONFIG_NAME = "kdc.yaml"
EMBEDDED_TEACHER = "kdc/gemma3-270m"

DEFAULT_PERSONAS = ("a curious beginner", "a busy professional", "a student preparing for an exam",
                    "an expert checking details", "a teacher writing a worksheet")
DEFAULT_DIFFICULTIES = ("easy", "medium", "hard")
DEFAULT_STYLES = ("concise", "step by step", "detailed")

# Sections of kdc.yaml read by other commands (train, eval, report, review) or handed on verbatim
# to other stages (gates, mix): compile keeps them without checking them.
FOREIGN_SECTIONS = ("gates", "mix", "train", "eval", "report", "review", "validate", "student")


@dataclass
class CompileConfig:
    """Every setting of one `kdc compile` run (see the README for each)."""

    taxonomy: Path = Path(".")
    out: Path | None = None
    teacher: str = EMBEDDED_TEACHER
    api_base: list[str] = field(default_factory=list)
    concurrency: int = 8
    teacher_workers: int | None = None  # processes making litellm calls; None: auto (llm/teacher.py)
    transport: str = "auto"  # auto | http (kdc's aiohttp client) | litellm (llm/httpclient.py)
    samples_per_node: int = 5
    seed: int = 0
    timeout: float = 120.0  # seconds per teacher request
    max_retries: int = 4  # transport retries per request (429, 5xx, timeout, connection)
    rpm: int | None = None  # the teacher endpoint's requests / tokens per minute (llm/ratelimit.py)
    tpm: int | None = None
    judge_rpm: int | None = None  # the same for a judge on another endpoint (one shared budget if the same)
    judge_tpm: int | None = None
    max_cost: float | None = None  # USD, hard cap on teacher spend (known prices only)
    max_attempts: int | None = None  # per node; default 4 * target + 4
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 1024
    eval_share: float = 0.2  # share of each leaf's seeds held out as its eval set (at least one)
    few_shot: int = 3  # seed examples shown per request
    chunk_words: int = 400  # knowledge chunk size in words, cut along the markdown structure
    per_chunk: int = 1  # knowledge: Q&A per chunk; the quota is max(samples_per_node, per_chunk * chunks)
    reasoning: bool | dict[str, bool] | None = None  # CoT steps: all, per kind, or None (plan.reasoning_for)
    fetch_documents: bool = False  # allow cloning knowledge repos given as URLs
    allow_repos: list[str] = field(default_factory=list)  # document repos allowed outside the checkout
    pdf_converter: str = "pypdf"  # PDF documents: pypdf (text layer) or docling (installed with its models)
    fail_on_shortfall: bool = False
    batch: bool = False  # generation requests through the provider's batch API (compile/batchrun.py)
    batch_poll: float = 30.0  # seconds between batch status checks
    dry_run: bool = False
    judge: str | None = None
    diversity: dict[str, list[str]] = field(default_factory=lambda: {
        "personas": list(DEFAULT_PERSONAS), "difficulties": list(DEFAULT_DIFFICULTIES),
        "styles": list(DEFAULT_STYLES)})
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-node overrides: {samples: N}
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # kdc.yaml `augment:` (augconfig.py)
    settings: dict[str, Any] = field(default_factory=dict)  # kdc.yaml as read (gates:, mix:, ...)
    config_file: Path | None = None
    marks: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)  # key -> (line, col) in the file

    # -- derived -------------------------------------------------------------------------
    def target(self, node_id: str) -> int:
        return int(self.nodes.get(node_id, {}).get("samples", self.samples_per_node))

    def attempts_budget(self, node_id: str, target: int | None = None) -> int:
        """Teacher attempts for a node: max_attempts, but never under a quota grown by per_chunk."""
        target = self.target(node_id) if target is None else target
        if self.max_attempts is not None:
            return max(self.max_attempts, target) if target > self.target(node_id) else self.max_attempts
        return 4 * target + 4

    @property
    def sampling(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens}

    def effective(self) -> dict[str, Any]:
        """The settings as used, for the manifest: JSON-safe, paths as given, no credentials."""
        d = asdict(self)
        d.pop("settings")
        d.pop("marks")
        d["taxonomy"] = str(self.taxonomy)
        d["out"] = str(self.out) if self.out else None
        d["config_file"] = str(self.config_file) if self.config_file else None
        d["api_base"] = [redact_url(u) for u in self.api_base]
        d["gates"] = self.settings.get("gates") or {}
        d["mix"] = self.settings.get("mix") or {}
        return redact_all(d)


def redact_all(value: Any) -> Any:
    """`redact_url` on every string inside `value` (what goes into the build manifest)."""
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, dict):
        return {k: redact_all(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_all(v) for v in value]
    return value


def redact_url(url: str) -> str:
    """Drop user:password@ from a URL (an api_base may carry credentials)."""
    return re.sub(r"(?<=://)[^/@\s]+@", "***@", url)


# name -> (type check, description for errors)
_SCALARS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "teacher": (str, "a litellm model string"),
    "concurrency": (int, "a positive integer"),
    "teacher_workers": (int, "a positive integer"),
    "samples_per_node": (int, "a positive integer"),
    "seed": (int, "an integer"),
    "timeout": ((int, float), "a number of seconds"),
    "max_retries": (int, "an integer >= 0"),
    "rpm": (int, "a positive integer (requests per minute)"),
    "tpm": (int, "a positive integer (tokens per minute)"),
    "judge_rpm": (int, "a positive integer (requests per minute)"),
    "judge_tpm": (int, "a positive integer (tokens per minute)"),
    "max_cost": ((int, float), "a number (USD)"),
    "max_attempts": (int, "a positive integer"),
    "temperature": ((int, float), "a number"),
    "top_p": ((int, float), "a number between 0 and 1"),
    "max_tokens": (int, "a positive integer"),
    "eval_share": ((int, float), "a number between 0 and 1"),
    "few_shot": (int, "a positive integer"),
    "chunk_words": (int, "a positive integer"),
    "per_chunk": (int, "an integer >= 0"),
    "fetch_documents": (bool, "true or false"),
    "pdf_converter": (str, "pypdf or docling"),
    "transport": (str, "auto, http or litellm"),
    "fail_on_shortfall": (bool, "true or false"),
    "batch": (bool, "true or false"),
    "batch_poll": ((int, float), "a number of seconds"),
    "judge": (str, "a litellm model string"),
    "out": (str, "a folder path"),
}
RATE_KEYS = ("rpm", "tpm", "judge_rpm", "judge_tpm")
_ALIASES = {"api_bases": "api_base", "samples": "samples_per_node", "chunk_tokens": "chunk_words"}


def load_config(taxonomy: Path, config_file: Path | None, cli: dict[str, Any], *, trust: bool = False
                ) -> CompileConfig:
    """Merge defaults < kdc.yaml < command line (`cli` holds only options actually given).
    The taxonomy's own kdc.yaml is held to compiler/trust.py's rule unless `trust`
    (--trust-config); a file named with --config is the maintainer's own and trusted."""
    cfg = CompileConfig(taxonomy=taxonomy)
    path = config_file if config_file is not None else taxonomy / CONFIG_NAME
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file {config_file} not found", hint="check the --config path")
    if path.is_file():
        given = {k for k, v in cli.items() if v is not None and v != () and v != []}
        _apply_file(cfg, path, None if trust or config_file is not None else given)
        cfg.config_file = path
    for key, value in cli.items():
        if value is None or (key in ("api_base", "allow_repos") and not value):
            continue
        if key in ("api_base", "allow_repos"):
            value = list(value)
        if key == "out":
            value = Path(value)
        setattr(cfg, key, value)
        cfg.marks.pop(key, None)  # the command line's value: no place in the file to point at
    _check(cfg)
    return cfg


def _apply_file(cfg: CompileConfig, path: Path, untrusted_given: set[str] | None = None) -> None:
    try:
        loaded = load_file(path)
    except YamlLoadError as exc:
        raise ConfigError(exc.issue.message, path=str(path), line=exc.issue.line, column=exc.issue.column,
                          hint=exc.issue.hint) from None
    data = loaded.data if loaded.data is not None else {}

    def fail(keys: list, message: str, hint: str = "") -> ConfigError:
        line, col = mark_of(node_at(loaded.node, keys))
        return ConfigError(message, path=str(path), line=line, column=col, hint=hint or None)

    if not isinstance(data, dict):
        raise fail([], "kdc.yaml must be a mapping of settings", "e.g. samples_per_node: 5")
    if untrusted_given is not None:
        from compiler.trust import check_untrusted

        check_untrusted(data, loaded.node, path, untrusted_given)
    cfg.settings = data
    known = {f.name for f in fields(CompileConfig)} - {"settings", "config_file", "taxonomy", "dry_run", "marks"}
    for raw_key, value in data.items():
        key = _ALIASES.get(raw_key, raw_key)
        cfg.marks[key] = mark_of(node_at(loaded.node, [raw_key]))
        if key in FOREIGN_SECTIONS:
            continue
        if key == "chunk_overlap":
            raise fail([raw_key], "chunk_overlap is no longer used: chunks follow the document's sections",
                       "remove it; set chunk_words (default 400) for the chunk size")
        if key not in known:
            log.warning("%s: unknown setting %r ignored (known: %s)", path, raw_key, ", ".join(sorted(known)))
            continue
        if key == "api_base":
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list) or not all(isinstance(u, str) and u for u in items):
                raise fail([raw_key], "api_base must be a URL or a list of URLs")
            cfg.api_base = list(items)
        elif key == "allow_repos":
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list) or not all(isinstance(u, str) and u.strip() for u in items):
                raise fail([raw_key], "allow_repos must be a folder or URL prefix, or a list of them")
            cfg.allow_repos = [u if "://" in u or u.startswith("~") or Path(u).is_absolute() else
                               str(path.parent / u) for u in items]
        elif key == "diversity":
            if not isinstance(value, dict):
                raise fail([raw_key], "diversity must be a mapping", "e.g. diversity: {personas: [a nurse]}")
            for sub, items in value.items():
                if sub not in cfg.diversity:
                    raise fail([raw_key, sub], f"unknown diversity list {sub!r}",
                               "use personas, difficulties or styles")
                if not isinstance(items, list) or not items or not all(isinstance(i, str) and i.strip()
                                                                        for i in items):
                    raise fail([raw_key, sub], f"diversity.{sub} must be a non-empty list of strings")
                cfg.diversity[sub] = list(items)
        elif key == "reasoning":
            kinds = ("knowledge", "freeform_skill", "grounded_skill")
            if not isinstance(value, bool) and not (isinstance(value, dict) and all(
                    k in kinds and isinstance(v, bool) for k, v in value.items())):
                raise fail([raw_key], f"reasoning must be true, false or a mapping of {', '.join(kinds)} to true/false",
                           "e.g. reasoning: {freeform_skill: false}")
            cfg.reasoning = value
        elif key == "augment":
            cfg.augment = parse_augment(value, fail, raw_key)
        elif key == "nodes":
            if not isinstance(value, dict):
                raise fail([raw_key], "nodes must map node ids to settings",
                           "e.g. nodes: {knowledge/science/astronomy: {samples: 10}}")
            for node_id, over in value.items():
                if not isinstance(over, dict) or set(over) - {"samples", "reasoning"}:
                    raise fail([raw_key, node_id], f"nodes.{node_id} supports only `samples` and `reasoning`")
                if "reasoning" in over and not isinstance(over["reasoning"], bool):
                    raise fail([raw_key, node_id, "reasoning"], "reasoning must be true or false")
                n = over.get("samples")
                if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
                    raise fail([raw_key, node_id, "samples"], "samples must be a positive integer")
                cfg.nodes[str(node_id).strip("/")] = dict(over)
        else:
            typ, what = _SCALARS[key]
            ok = value is None and key in ("max_cost", "max_attempts", "judge", "out", *RATE_KEYS)
            if not ok:
                ok = isinstance(value, typ) and not (isinstance(value, bool) and typ is not bool)
            if not ok:
                raise fail([raw_key], f"{raw_key} must be {what}, got {value!r}")
            if key == "out" and value is not None:
                value = (path.parent / value) if not Path(value).is_absolute() else Path(value)
            setattr(cfg, key, value)


def _check(cfg: CompileConfig) -> None:
    def bad(key: str, msg: str, hint: str | None = None) -> ConfigError:
        """Located at the setting's line in kdc.yaml when the value came from there."""
        line, col = cfg.marks.get(key, (None, None))
        return ConfigError(msg, hint=hint, path=str(cfg.config_file) if cfg.config_file else None,
                           line=line, column=col)

    if cfg.concurrency < 1:
        raise bad("concurrency", "concurrency must be at least 1")
    if cfg.teacher_workers is not None and cfg.teacher_workers < 1:
        raise bad("teacher_workers", "teacher_workers must be at least 1")
    if cfg.samples_per_node < 1:
        raise bad("samples_per_node", "samples_per_node must be at least 1")
    if cfg.max_retries < 0:
        raise bad("max_retries", "max_retries must be 0 or more")
    if cfg.timeout <= 0:
        raise bad("timeout", "timeout must be a positive number of seconds")
    if cfg.max_cost is not None and cfg.max_cost < 0:
        raise bad("max_cost", "max_cost must be 0 or more")
    if cfg.batch_poll <= 0:
        raise bad("batch_poll", "batch_poll must be a positive number of seconds")
    for key in RATE_KEYS:
        if getattr(cfg, key) is not None and getattr(cfg, key) < 1:
            raise bad(key, f"{key} must be at least 1", hint="leave it out for no client-side limit")
    if cfg.max_attempts is not None and cfg.max_attempts < 1:
        raise bad("max_attempts", "max_attempts must be at least 1")
    if not 0.0 <= cfg.eval_share < 1.0:
        raise bad("eval_share", "eval_share must be at least 0 and below 1")
    if not 0.0 < cfg.top_p <= 1.0:
        raise bad("top_p", "top_p must be in (0, 1]")
    if cfg.temperature < 0:
        raise bad("temperature", "temperature must be 0 or more")
    if cfg.max_tokens < 16:
        raise bad("max_tokens", "max_tokens must be at least 16")
    if cfg.few_shot < 1:
        raise bad("few_shot", "few_shot must be at least 1")
    if cfg.transport not in ("auto", "http", "litellm"):
        raise bad("transport", f"unknown transport {cfg.transport!r}", "use auto, http or litellm")
    if cfg.pdf_converter not in ("pypdf", "docling"):
        raise bad("pdf_converter", f"unknown pdf_converter {cfg.pdf_converter!r}", "use pypdf or docling")
    if cfg.chunk_words < 20:
        raise bad("chunk_words", "chunk_words must be at least 20")
    if cfg.per_chunk < 0:
        raise bad("per_chunk", "per_chunk must be 0 or more", hint="0: samples_per_node only")
    if "/" not in cfg.teacher:
        raise bad("teacher", f"teacher {cfg.teacher!r} is not a litellm model string",
                  hint="use provider/model, e.g. openai/gpt-4o-mini, hosted_vllm/<model>, ollama/llama3.1")
    for url in cfg.api_base:
        if not re.match(r"^https?://", url):
            raise bad("api_base", f"api_base {redact_url(url)!r} is not an http(s) URL",
                      hint="e.g. --api-base http://127.0.0.1:8000/v1")

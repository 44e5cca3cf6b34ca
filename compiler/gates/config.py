"""The gates' settings (kdc.yaml `gates:`): thresholds, PII policy and the judge, type-checked,
so a typo in kdc.yaml is a located ConfigError rather than a silent default."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from compiler.errors import ConfigError
from compiler.gates.pii import KINDS as PII_KINDS

GROUNDED_KINDS = ("knowledge", "grounded_skill")
NUM_PERM = 64  # MinHash permutations; matches are confirmed by exact Jaccard: the sketch only finds candidates
NEAR_DUP_THRESHOLD = 0.6  # here, not in gates/diversity.py: the settings load without numpy and datasketch
JUDGE_RUBRICS = ("faithfulness", "relevance", "format", "standalone")


@dataclass
class GateConfig:
    """Thresholds of every gate (kdc.yaml `gates:`); the defaults suit short chain-of-thought Q&A."""

    min_question_chars: int = 8
    max_question_chars: int = 2000
    max_answer_chars: int = 8000
    max_context_chars: int = 20000
    min_reasoning_steps: int = 1
    near_dup_threshold: float = NEAR_DUP_THRESHOLD  # Jaccard of word-bigram sets, same node / siblings
    seed_dup_threshold: float = NEAR_DUP_THRESHOLD  # against the node's own training seeds
    contamination_threshold: float = 0.5  # question+answer against any held-out eval seed
    contamination_question_threshold: float = 0.8  # question alone against eval questions
    num_perm: int = NUM_PERM
    grounding_threshold: float = 0.5  # share of the answer's content words found in the context
    pii: str = "redact"  # redact | drop | off
    pii_kinds: tuple[str, ...] = PII_KINDS
    min_mean_logprob: float | None = None  # e.g. -1.5; only applied when the teacher returns logprobs
    judge: str | None = None  # litellm model string; None = no judge
    judge_api_base: str | None = None
    judge_api_key_env: str | None = None  # name of the environment variable holding the judge's key
    judge_thresholds: dict[str, int] = field(default_factory=lambda: {r: 3 for r in JUDGE_RUBRICS})
    judge_timeout: float = 60.0
    judge_concurrency: int | None = None  # judge requests in flight; None: the teacher's --concurrency

    @classmethod
    def from_settings(cls, settings: dict | None, judge: str | None = None) -> "GateConfig":
        """From kdc.yaml's settings (its `gates:` section); `judge` (from `--judge`) wins over
        `gates.judge`. Unknown keys and bad values are ConfigErrors, not silent defaults."""
        settings = settings or {}
        section = settings.get("gates", {}) if isinstance(settings, dict) else None
        if section is None:
            section = {}
        if not isinstance(section, dict):
            raise ConfigError("`gates:` must be a mapping", hint="e.g. gates: {near_dup_threshold: 0.6}")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(section) - set(known))
        if unknown:
            raise ConfigError(f"unknown gates setting(s): {', '.join(unknown)}",
                              hint="known: " + ", ".join(sorted(known)))
        cfg = cls()
        for key, value in section.items():
            setattr(cfg, key, _coerce(key, value, getattr(cfg, key)))
        if judge is not None:
            cfg.judge = judge or None
        cfg.check()
        return cfg

    def check(self) -> None:
        for name in ("near_dup_threshold", "seed_dup_threshold", "contamination_threshold",
                     "contamination_question_threshold", "grounding_threshold"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"gates.{name} must be between 0 and 1, got {v}")
        if self.pii not in ("redact", "drop", "off"):
            raise ConfigError(f"gates.pii must be redact, drop or off, got {self.pii!r}")
        bad = sorted(set(self.pii_kinds) - set(PII_KINDS))
        if bad:
            raise ConfigError(f"gates.pii_kinds: unknown kind(s) {', '.join(bad)}",
                              hint="known: " + ", ".join(PII_KINDS))
        bad = sorted(set(self.judge_thresholds) - set(JUDGE_RUBRICS))
        if bad:
            raise ConfigError(f"gates.judge_thresholds: unknown rubric(s) {', '.join(bad)}",
                              hint="rubrics: " + ", ".join(JUDGE_RUBRICS))
        for rubric, v in self.judge_thresholds.items():
            if not isinstance(v, (int, float)) or not 1 <= v <= 5:
                raise ConfigError(f"gates.judge_thresholds.{rubric} must be a score from 1 to 5, got {v!r}")
        if self.judge_concurrency is not None and self.judge_concurrency < 1:
            raise ConfigError("gates.judge_concurrency must be at least 1")
        if self.num_perm < 16:
            raise ConfigError("gates.num_perm must be at least 16")
        if self.min_question_chars > self.max_question_chars:
            raise ConfigError("gates.min_question_chars is over gates.max_question_chars")

    def to_dict(self) -> dict[str, Any]:
        """The effective settings for the manifest (no secrets: only the key's variable name)."""
        from compiler.config import redact_url

        d = asdict(self)
        d["pii_kinds"] = list(self.pii_kinds)
        if self.judge_api_base:  # an endpoint may carry user:password@ (review §4.5)
            d["judge_api_base"] = redact_url(self.judge_api_base)
        return d


_OPTIONAL_STR = ("judge", "judge_api_base", "judge_api_key_env")


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Type-check one `gates:` value against its default's type."""
    if key == "judge_thresholds":
        if not isinstance(value, dict):
            raise ConfigError("gates.judge_thresholds must be a mapping", hint="e.g. {faithfulness: 4}")
        return {**default, **value}
    if key == "pii_kinds":
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError("gates.pii_kinds must be a list of kinds", hint="known: " + ", ".join(PII_KINDS))
        return tuple(value)
    if value is None and (key in _OPTIONAL_STR or key in ("min_mean_logprob", "judge_concurrency")):
        return None
    if key in _OPTIONAL_STR or isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"gates.{key} must be a string, got {value!r}")
        return value
    if isinstance(default, int) or key == "judge_concurrency":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"gates.{key} must be an integer, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"gates.{key} must be a number, got {value!r}")
    return float(value)

"""kdc.yaml `augment:` — the knowledge augmentation stage and typed questions (issue 15 items 2-3).

Kept apart from compiler/config.py so that the section's keys, defaults and checks sit in one
short place. `enabled: null` (the default) means: on for a real teacher, off for the embedded
demo model, which is too weak to write faithful summaries and too slow to pay for them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable

VIEW_KINDS = ("detailed_summary", "extractive_summary", "atomic_facts")
QUESTION_TYPES = ("definitional", "procedural", "comparative", "causal", "numeric", "troubleshooting")


@dataclass
class AugmentConfig:
    """Every `augment:` setting; see README "Knowledge augmentation" for each."""

    enabled: bool | None = None  # None: on unless the teacher is the embedded model (kdc/...)
    views: list[str] = field(default_factory=lambda: list(VIEW_KINDS))  # [] = typed questions over chunks only
    questions_per_call: int = 3  # K typed questions asked in one call about one chunk or view
    question_types: list[str] = field(default_factory=lambda: list(QUESTION_TYPES))
    facts_per_group: int = 5  # atomic facts shown together as one unit to ask about
    do_not_repeat: int = 20  # how many questions (the leaf's seeds, then earlier accepted ones) the prompt lists
    wave_calls: int = 8  # typed calls a leaf launches per round; wave w lists waves < w (0: the whole quota at once)
    min_summary_support: float = 0.6  # share of a detailed summary's content words found in its source
    min_fact_support: float = 0.7  # the same, per atomic fact (a fact below it is dropped)
    min_passage_words: int = 5  # an extractive passage shorter than this is not a passage

    def active(self, teacher: str) -> bool:
        return self.enabled if self.enabled is not None else not teacher.startswith("kdc/")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)




def parse_augment(value: Any, fail: Callable[..., Exception], key: str = "augment") -> AugmentConfig:
    """The section as written (a mapping, or true/false for `enabled`), checked with located errors:
    `fail(path, message, hint)` builds the ConfigError pointing at the offending key."""
    cfg = AugmentConfig()
    if value is None or isinstance(value, bool):
        cfg.enabled = value
        return cfg
    if not isinstance(value, dict):
        raise fail([key], "augment must be true, false or a mapping", "e.g. augment: {questions_per_call: 3}")
    known = {f.name for f in fields(AugmentConfig)}
    for name, v in value.items():
        where = [key, name]
        if name not in known:
            raise fail(where, f"unknown augment setting {name!r}", f"known: {', '.join(sorted(known))}")
        if name == "enabled":
            if v is not None and not isinstance(v, bool):
                raise fail(where, "augment.enabled must be true, false or null (auto)")
        elif name in ("views", "question_types"):
            allowed = VIEW_KINDS if name == "views" else None
            if not isinstance(v, list) or not all(isinstance(i, str) and i.strip() for i in v) \
                    or len(set(v)) != len(v):
                raise fail(where, f"augment.{name} must be a list of distinct names")
            bad = [i for i in v if allowed is not None and i not in allowed]
            if bad:
                raise fail(where, f"unknown view {bad[0]!r}", f"use {', '.join(VIEW_KINDS)}")
            if name == "question_types" and not v:
                raise fail(where, "augment.question_types must name at least one type")
            v = [i.strip() for i in v]
        elif name in ("questions_per_call", "facts_per_group", "do_not_repeat", "min_passage_words", "wave_calls"):
            low = 0 if name in ("do_not_repeat", "wave_calls") else 1
            if isinstance(v, bool) or not isinstance(v, int) or v < low or (name == "questions_per_call" and v > 10):
                raise fail(where, f"augment.{name} must be an integer "
                                  + ("from 1 to 10" if name == "questions_per_call" else f">= {low}"))
        else:  # the support thresholds
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise fail(where, f"augment.{name} must be a number from 0 to 1")
            v = float(v)
        setattr(cfg, name, v)
    return cfg

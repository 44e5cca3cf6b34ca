"""What the teacher is asked to fill: the JSON schema of a record for a leaf kind, and the
response_format sent with it (derived from schemas/record.json). The client that sends it is
compiler/llm/teacher.py."""

from __future__ import annotations

import copy
from functools import lru_cache

from compiler.resources import load_schema

__all__ = ["response_format", "response_schema"]


@lru_cache(maxsize=None)
def _response_schema(kind: str, reasoning: bool = True) -> dict:
    """The JSON schema the teacher must fill for a leaf kind, derived from schemas/record.json:
    grounded skills must invent a context; for knowledge kdc supplies the chunk as the context,
    so the teacher is not asked for one; freeform skills have none. Without reasoning (a leaf
    whose answers need no steps, e.g. a haiku) the `reasoning` key is not asked for at all."""
    schema = copy.deepcopy(load_schema("record.json"))
    if not reasoning:
        schema["properties"].pop("reasoning")
        schema["required"] = [k for k in schema["required"] if k != "reasoning"]
    for key in ("$schema", "$id", "title", "description"):
        schema.pop(key, None)
    if kind == "grounded_skill":
        schema["required"] = ["context", *schema["required"]]
    else:
        schema["properties"].pop("context")
    return schema


def response_schema(kind: str, reasoning: bool = True) -> dict:
    return copy.deepcopy(_response_schema(kind, reasoning))


@lru_cache(maxsize=None)
def response_format(kind: str, reasoning: bool = True) -> dict:
    """The response_format sent with every request of a kind (shared: callers must not mutate it)."""
    name = f"kdc_{kind}_record" if reasoning else f"kdc_{kind}_answer"
    return {"type": "json_schema",
            "json_schema": {"name": name, "schema": _response_schema(kind, reasoning), "strict": True}}

"""A provider that refuses kdc's JSON schema (review §4.6).

`strict: true` with length keywords is refused by some providers (minItems other than 0/1,
maxLength on fine-tuned models...). Before, the 400 became a per-sample `http-error` that fed the
circuit breaker until the run ended "teacher stopped answering" with no hint at the schema. Now a
400 that names the schema switches the teacher, once and for the rest of the run, to
`response_format: json_object`. That is safe: the prompts spell out the keys, and kdc validates
every answer against the same schema itself (generate.parse), so nothing the schema forbids gets
in; the manifest records the fallback and the provider's reason.
"""

from __future__ import annotations

import re
from typing import Any

JSON_OBJECT: dict[str, Any] = {"type": "json_object"}
_FEATURES = ("minItems", "maxItems", "minLength", "maxLength", "minimum", "maximum", "pattern", "format",
             "additionalProperties", "strict", "json_schema", "response_format")
_ABOUT_SCHEMA = re.compile(r"response_format|json_schema|\bschema\b|structured output|" + "|".join(_FEATURES), re.I)


def schema_refusal(out: Any) -> bool:
    """A 400 (bad request) whose message is about the response format or its schema."""
    return getattr(out, "kind", None) == "bad-request" and bool(_ABOUT_SCHEMA.search(getattr(out, "message", "") or ""))


def schema_feature(message: str) -> str:
    """The schema feature the provider names (e.g. `minItems`), for the log and the manifest."""
    for name in _FEATURES:
        if re.search(rf"\b{name}\b", message or "", re.I):
            return name
    return "response_format json_schema"

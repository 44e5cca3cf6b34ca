"""The one scrub of secrets: every error text from any LLM call (teacher, judge, eval judge, workers)
passes through `scrub` before it reaches a log, a rejection, a manifest or the user. A 401 body may
echo the key it was sent, and a URL may carry credentials."""

from __future__ import annotations

import os
import re

KEY_VARS = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD)$", re.I)


def scrub(text: str, *secrets: str | None) -> str:
    """Remove secrets from an error text: `secrets` given by the caller (e.g. a key read from a
    variable with another name), values of *_KEY/*_TOKEN/... variables, key-like strings, URL
    credentials."""
    for value in secrets:
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    for name, value in os.environ.items():
        if KEY_VARS.search(name) and value and len(value) >= 6:
            text = text.replace(value, "***")
    text = re.sub(r"\b(sk|pk|rk|key)-[A-Za-z0-9_\-*]{6,}", r"\1-***", text)
    text = re.sub(r"(?i)(bearer\s+)[A-Za-z0-9._\-]{8,}", r"\1***", text)
    return re.sub(r"(?<=://)[^/@\s]+@", "***@", text)

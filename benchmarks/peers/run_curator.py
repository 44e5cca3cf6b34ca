"""Bespoke Curator 0.1.31 on kdc's requests: `curator.LLM` with the OpenAI online backend at the
teacher's base_url, a Pydantic response_format built from kdc's JSON schema (Curator sends it as
`response_format: json_schema`), max_concurrent_requests = the concurrency.

usage: run_curator.py PROMPTS.jsonl BASE_URL CONCURRENCY RESULT.json   (in Curator's own venv)
"""

from __future__ import annotations

import json
import sys

from pydantic import create_model

from common import load, report

from bespokelabs import curator  # noqa: E402  (after the stdlib helpers: Curator is slow to import)
from bespokelabs.curator.request_processor.online.openai_online_request_processor import (  # noqa: E402
    OpenAIOnlineRequestProcessor)

# Curator probes structured-output support with its own request ("Jason is 25 years old" parsed
# into {name, age}); the loopback teacher only fills the schema it is sent, which that probe's
# parser rejects. The server does honour `response_format: json_schema`, so support is declared
# (one probe request fewer than Curator would send to a real server).
OpenAIOnlineRequestProcessor.check_structured_output_support = lambda self: True


def model_for(schema: dict):
    """A Pydantic model with kdc's schema's fields (strings and lists of strings)."""
    fields = {}
    for name, prop in schema["properties"].items():
        typ = list[str] if prop.get("type") == "array" else str
        fields[name] = (typ, ...) if name in schema.get("required", []) else (typ | None, None)
    return create_model("Record", **fields)


class Generate(curator.LLM):
    def prompt(self, row: dict) -> list[dict]:
        return json.loads(row["messages"])

    def parse(self, row: dict, response) -> dict:
        return {"record": response.model_dump_json()}


def main(path: str, base: str, concurrency: int, result: str) -> None:
    prompts = load(path)
    schema = prompts[0]["response_format"]["json_schema"]["schema"]
    llm = Generate(model_name="teacher-bench", backend="openai", response_format=model_for(schema),
                   backend_params={"base_url": base, "api_key": "sk-bench", "max_concurrent_requests": concurrency,
                                   "max_requests_per_minute": 1_000_000, "max_tokens_per_minute": 1_000_000_000,
                                   "max_retries": 1, "require_all_responses": False})
    out = llm([{"messages": json.dumps(p["messages"]), "seed": p["seed"]} for p in prompts])
    report(result, len(out.dataset), len(prompts))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])

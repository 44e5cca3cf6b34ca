"""distilabel 1.5.3 on kdc's requests: LoadDataFromDicts >> ChatGeneration(OpenAILLM at the
teacher's base_url), input_batch_size = the concurrency (distilabel sends a batch's requests
together and waits for the batch). kdc's `response_format: json_schema` goes in `extra_body`:
OpenAILLM's own `response_format` argument is typed Dict[str, str] and cannot carry a schema.

usage: run_distilabel.py PROMPTS.jsonl BASE_URL CONCURRENCY RESULT.json   (in distilabel's own venv)
"""

from __future__ import annotations

import os
import sys

from common import load, report, valid

from distilabel.models.llms import OpenAILLM  # noqa: E402
from distilabel.pipeline import Pipeline  # noqa: E402
from distilabel.steps import LoadDataFromDicts  # noqa: E402
from distilabel.steps.tasks import ChatGeneration  # noqa: E402


def main(path: str, base: str, concurrency: int, result: str) -> None:
    prompts = load(path)
    fmt = prompts[0]["response_format"]
    with Pipeline(name="kdc-bench", cache_dir=os.environ.get("DISTILABEL_CACHE_DIR")) as pipeline:
        rows = LoadDataFromDicts(data=[{"messages": p["messages"]} for p in prompts], batch_size=concurrency)
        gen = ChatGeneration(llm=OpenAILLM(model="teacher-bench", base_url=base, api_key="sk-bench", max_retries=1,
                                           generation_kwargs={"max_new_tokens": 1024, "extra_body": {"response_format": fmt}}),
                             input_batch_size=concurrency)
        rows >> gen
    distiset = pipeline.run(use_cache=False)
    out = distiset["default"]["train"]
    schema = fmt["json_schema"]["schema"]
    report(result, sum(valid(g, schema) for g in out["generation"]), len(prompts))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])

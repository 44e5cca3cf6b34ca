#!/usr/bin/env python3
"""Grade the judge's golden cases (tests/golden/judge_cases.yaml) with a real model through kdc's
own judge path (templates, schema, client), and report how often its verdict matches the label.

usage: judge_golden.py --judge MODEL [--api-base URL] [--api-key-env VAR]
(e.g. `--judge openai/gpt-4o-mini`, or `--judge hosted_vllm/Qwen2.5-7B-Instruct --api-base http://host:8000/v1`)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from compiler.gates.judge import DEFAULT_THRESHOLDS, Judge  # noqa: E402
from compiler.records import Record  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--judge", required=True)
    ap.add_argument("--api-base")
    ap.add_argument("--api-key-env")
    args = ap.parse_args()
    cases = yaml.safe_load((ROOT / "tests" / "golden" / "judge_cases.yaml").read_text(encoding="utf-8"))
    judge = Judge(args.judge, api_base=args.api_base, api_key_env=args.api_key_env)
    rows, agree = [], 0
    for c in cases:
        rec = Record(c["question"], tuple(c["reasoning"]), c["answer"], c.get("context"))
        got = asyncio.run(judge.score(rec, c.get("context"), c["kind"]))
        ok = got.error is None and (all(got.scores[r] >= t for r, t in DEFAULT_THRESHOLDS.items())
                                    if c["label"] == "good" else got.scores[c["rubric"]] < DEFAULT_THRESHOLDS[c["rubric"]])
        agree += ok
        rows.append({"case": c["name"], "agrees": ok, "scores": got.scores, "error": got.error})
    print(json.dumps({"judge": args.judge, "cases": len(cases), "agreement": round(agree / len(cases), 3),
                      "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

"""The requests kdc would send for a taxonomy, one JSON line each (messages, response_format, seed).

Run with kdc's interpreter: `python benchmarks/peers/dump_prompts.py TAXONOMY N OUT.jsonl`. The
peers then send exactly these prompts and schemas, so every tool is asked the same thing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(taxonomy: Path, samples_per_node: int, out: Path) -> int:
    from compiler.compile.generate import prepare
    from compiler.compile.plan import make_plan, task_for
    from compiler.compile.prompts import Prompts
    from compiler.config import load_config
    from compiler.taxonomy.tree import load_taxonomy

    cfg = load_config(taxonomy, None, {"samples_per_node": samples_per_node})
    prompts = Prompts()
    n = 0
    with out.open("w", encoding="utf-8") as f:
        for lp in make_plan(load_taxonomy(taxonomy), cfg):
            for i in range(lp.target):
                req = prepare(task_for(lp, i, cfg), prompts, cfg.teacher, cfg.sampling)
                f.write(json.dumps({"messages": req.rendered.messages, "response_format": req.response_format,
                                    "seed": req.task.request_seed}, ensure_ascii=False) + "\n")
                n += 1
    return n


if __name__ == "__main__":
    print(main(Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])))

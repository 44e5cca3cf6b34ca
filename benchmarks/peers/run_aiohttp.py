"""The machine's floor: bare aiohttp POSTs of kdc's requests, at the given concurrency.

usage: run_aiohttp.py PROMPTS.jsonl BASE_URL CONCURRENCY RESULT.json
"""

from __future__ import annotations

import asyncio
import sys

import aiohttp

from common import load, report, valid


async def main(prompts: list[dict], base: str, concurrency: int) -> int:
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def one(p: dict) -> bool:
            async with sem:
                body = {"model": "teacher-bench", "messages": p["messages"], "seed": p["seed"],
                        "response_format": p["response_format"]}
                async with session.post(base + "/chat/completions", json=body,
                                        headers={"Authorization": "Bearer sk-bench"}) as r:
                    data = await r.json()
            return valid(data["choices"][0]["message"]["content"], p["response_format"]["json_schema"]["schema"])

        return sum(await asyncio.gather(*(one(p) for p in prompts)))


if __name__ == "__main__":
    prompts = load(sys.argv[1])
    report(sys.argv[4], asyncio.run(main(prompts, sys.argv[2], int(sys.argv[3]))), len(prompts))

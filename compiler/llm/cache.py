"""Content-addressed teacher cache: one SQLite row per request key, committed the moment the
answer arrives.

The key hashes everything that decides a request (rendered prompt, template, teacher model,
sampling parameters, response schema, sample index), so an unchanged tree re-runs with zero
teacher calls and an edited leaf misses only its own keys. WAL mode with autocommit: a row is
durable once `put` returns, so `kill -9` at any moment loses at most the requests in flight.
Teacher answers are cached (raw text + usage), never kdc's verdicts: parsing and gating re-run and
stay consistent with the current code. The LLM judge's scores are cached too (table `judgments`,
keyed by the judge model and its exact prompt): they cost a model call, and a resumed or re-run
build must not pay for them twice. `kdc compile --batch` keeps the ids of the batches it submitted
(table `batches`, with the requests each carries) so a crash or restart resumes a batch instead of
paying for it twice (compiler/compile/batchrun.py).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from compiler.errors import BuildError

SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    node_id TEXT NOT NULL,
    sample_index INTEGER NOT NULL,
    payload TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS judgments (
    key TEXT PRIMARY KEY,
    payload TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    requests TEXT NOT NULL
);
"""


def request_key(payload: Any) -> str:
    """sha256 of the canonical JSON of what decides a request."""
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class Cache:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        try:
            self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes (kill -9)
            self.db.execute("PRAGMA busy_timeout=10000")
            self.db.executescript(SCHEMA)
            self.db.execute("SELECT COUNT(*) FROM answers").fetchone()
        except sqlite3.DatabaseError as exc:  # not a database, damaged, locked, disk full
            raise BuildError(f"the teacher cache cannot be opened: {exc}", path=str(path),
                             hint=f"if it is damaged, move it aside (mv {path} {path}.bad) and re-run; "
                                  "its answers are then asked again") from None
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT payload FROM answers WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return json.loads(row[0])

    def put(self, key: str, node_id: str, sample_index: int, payload: dict[str, Any]) -> None:
        self.db.execute("INSERT OR REPLACE INTO answers (key, node_id, sample_index, payload) VALUES (?, ?, ?, ?)",
                        (key, node_id, sample_index, json.dumps(payload, ensure_ascii=False)))

    def get_judgment(self, key: str) -> dict[str, Any] | None:
        """A judge's verdict on one sample (keyed by judge model + the exact judge prompt)."""
        row = self.db.execute("SELECT payload FROM judgments WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row is not None else None

    def put_judgment(self, key: str, payload: dict[str, Any]) -> None:
        self.db.execute("INSERT OR REPLACE INTO judgments (key, payload) VALUES (?, ?)",
                        (key, json.dumps(payload, ensure_ascii=False)))

    def has(self, key: str) -> bool:
        """Whether an answer is stored (not counted as a hit or a miss)."""
        return self.db.execute("SELECT 1 FROM answers WHERE key = ?", (key,)).fetchone() is not None

    def put_batch(self, batch_id: str, requests: dict[str, tuple[str, int]]) -> None:
        """A submitted batch (state `open`) and its requests: cache key -> (node id, sample index)."""
        self.db.execute("INSERT OR REPLACE INTO batches (batch_id, state, requests) VALUES (?, 'open', ?)",
                        (batch_id, json.dumps(requests, sort_keys=True)))

    def open_batches(self) -> list[tuple[str, dict[str, tuple[str, int]]]]:
        """(batch id, requests) of every batch submitted and not yet read back, oldest first."""
        rows = self.db.execute("SELECT batch_id, requests FROM batches WHERE state = 'open' ORDER BY rowid").fetchall()
        return [(bid, {k: (v[0], int(v[1])) for k, v in json.loads(req).items()}) for bid, req in rows]

    def close_batch(self, batch_id: str, state: str) -> None:
        """A batch read back (`completed`, `expired`, `failed`, `cancelled`) or given up (`lost`)."""
        self.db.execute("UPDATE batches SET state = ? WHERE batch_id = ?", (state, batch_id))

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        self.db.close()

"""What the scheduler tells a progress display: per-node counts, and the sink it calls.

Its own module so that the CLI can define its displays without importing the scheduler's stack
(jinja2, the teacher client): `kdc compile` forks its taxonomy check before that import
(compile/verdict.py), and the check gains the import's time.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class NodeProgress:
    node_id: str
    target: int
    accepted: int = 0
    rejected: int = 0
    failures: int = 0  # transport failures (after retries)
    tokens: int = 0
    in_flight: int = 0
    done: bool = False


class Progress:
    """Progress sink; the CLI supplies a rich (TTY) or log-line implementation. No-op here."""

    def start(self, nodes: list[NodeProgress]) -> None: ...

    def update(self, node: NodeProgress) -> None: ...

    def finish(self) -> None: ...

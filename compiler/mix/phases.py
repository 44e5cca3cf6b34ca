"""Multiphase SFT mixes: phase 1 = knowledge, phase 2 = skills + replay of phase 1 + the experts'
seed examples, each with a recipe that rebuilds it exactly.

A recipe is InstructLab's format: `datasets: [{path, sampling_size}]` (path relative to the
recipe; sampling_size a row count, or a share of the file when a float) and a `seed`. Every row
a mix draws from sits in a source file under mixes/sources/, already in mix-line form, so
`rebuild_mix(recipe)` is the whole procedure: draw from each source, then shuffle. The draw
ranks rows by a hash of (seed, source, row id), not Python's `random`, so the same recipe gives
the same rows in the same order on any Python version, and a changed source moves few rows.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from compiler.mix import knowledge as knowmix
from compiler.io import builddir
from compiler.io.fsutil import read_jsonl
from compiler.errors import BuildError, ConfigError
from compiler.records import Chunk, Sample, Seed
from compiler.taxonomy.tree import Taxonomy
from compiler.io.yamlload import YamlLoadError, load_file

PHASE1 = "phase1_knowledge"
PHASE2 = "phase2_skills"
SKILL_KINDS = ("freeform_skill", "grounded_skill")


@dataclass
class MixConfig:
    """kdc.yaml `mix:`. Shares are of the phase-2 total; the seed share is a ceiling (the seeds'
    ~70/30 synthetic/real guidance), the replay share a target (capped by phase 1's size)."""

    replay_share: float = 0.2
    seed_share: float = 0.3
    per_node_cap: int | None = None  # at most this many synthetic rows per leaf and phase
    per_node_floor: int = 0  # leaves with fewer accepted samples are upsampled (repeated) to this
    seed: int = 0
    # phase 1's row kinds per knowledge leaf (compiler/mix/knowledge.py); each at least 0.1, summing to 1
    knowledge_shares: dict[str, float] = field(default_factory=lambda: dict(knowmix.DEFAULT_SHARES))
    raft_distractors: int = 3  # excerpts of other documents beside the gold one
    raft_gold_share: float = 0.8  # RAFT rows that hold the gold excerpt at all (the rest: from memory)
    # accepted augmentation views that become content rows too (compiler/mix/knowledge.py); [] = sections only
    content_views: list[str] = field(default_factory=lambda: list(knowmix.VIEW_ROW_KINDS))

    @classmethod
    def from_settings(cls, settings: dict | None) -> "MixConfig":
        """From kdc.yaml's settings: the `mix:` section; its `seed` defaults to the build's `seed`."""
        settings = settings or {}
        section = settings.get("mix") or {}
        if not isinstance(section, dict):
            raise ConfigError("`mix:` must be a mapping", hint="e.g. mix: {replay_share: 0.2, seed_share: 0.3}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ConfigError(f"unknown mix setting(s): {', '.join(unknown)}",
                              hint="known: " + ", ".join(sorted(known)))
        cfg = cls(seed=settings.get("seed", 0) if isinstance(settings.get("seed", 0), int) else 0)
        for key, value in section.items():
            if key == "knowledge_shares":
                why = knowmix.check_shares(value)
                if why:
                    raise ConfigError(why, hint="defaults: " + ", ".join(f"{k}: {v}" for k, v in knowmix.DEFAULT_SHARES.items()))
                value = {k: float(v) for k, v in value.items()}
            elif key == "content_views":
                if not isinstance(value, list) or not all(v in knowmix.VIEW_ROW_KINDS for v in value) \
                        or len(set(value)) != len(value):
                    raise ConfigError(f"mix.content_views must be a list of distinct view kinds, got {value!r}",
                                      hint="known: " + ", ".join(knowmix.VIEW_ROW_KINDS))
                value = list(value)
            elif key in ("replay_share", "seed_share", "raft_gold_share"):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ConfigError(f"mix.{key} must be a number between 0 and 1, got {value!r}")
                value = float(value)
            elif key == "per_node_cap" and value is None:
                pass
            elif isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"mix.{key} must be an integer, got {value!r}")
            setattr(cfg, key, value)
        cfg.check()
        return cfg

    def check(self) -> None:
        for name in ("replay_share", "seed_share"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ConfigError(f"mix.{name} must be at least 0 and under 1, got {v}")
        if self.replay_share + self.seed_share >= 1.0:
            raise ConfigError("mix.replay_share + mix.seed_share must stay under 1",
                              hint="phase 2 needs room for the skills' own synthetic data")
        if self.per_node_cap is not None and self.per_node_cap < 1:
            raise ConfigError("mix.per_node_cap must be at least 1 (or null for no cap)")
        if not 0.0 <= self.raft_gold_share <= 1.0:
            raise ConfigError(f"mix.raft_gold_share must be from 0 to 1, got {self.raft_gold_share}")
        if self.raft_distractors < 1:
            raise ConfigError("mix.raft_distractors must be at least 1")
        if self.per_node_floor < 0:
            raise ConfigError("mix.per_node_floor must not be negative")
        if self.per_node_cap is not None and self.per_node_floor > self.per_node_cap:
            raise ConfigError("mix.per_node_floor is over mix.per_node_cap")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- rows ----------------------
def sample_row(sample: Sample, source: str = "synthetic", row_kind: str = "skill") -> dict:
    """A mix line: chat messages (TRL's conversational form) plus where the row came from."""
    messages = [dict(m) for m in sample.messages]
    ctx = sample.record.context
    if ctx and ctx.strip():  # knowledge and grounded rows carry their context in the user turn
        user = next((m for m in messages if m.get("role") == "user"), None)
        if user is not None and ctx.strip() not in user.get("content", ""):
            user["content"] = f"{ctx.strip()}\n\n{user.get('content', '')}"
    return {"messages": messages, "metadata": {"node_id": sample.node_id, "source": source, "id": sample.id,
                                               "row_kind": row_kind}}


def seed_row(node_id: str, index: int, seed: Seed, system: str | None) -> dict:
    """A seed example as a mix line, shaped like the synthetic rows: the node's system prompt when
    its samples have one, the context before the question, and the expert's answer after the same
    `Answer:` marker (seeds carry no reasoning steps)."""
    user = f"{seed.context.strip()}\n\n{seed.question}" if seed.context else seed.question
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}, {"role": "assistant", "content": f"Answer: {seed.answer.strip()}"}]
    sid = hashlib.sha256(f"{node_id}\0{index}\0{seed.question}\0{seed.answer}".encode()).hexdigest()[:20]
    return {"messages": messages, "metadata": {"node_id": node_id, "source": "seed", "id": f"seed-{sid}",
                                               "row_kind": "seed"}}


# ---------------------------------------------------------------- recipes -------------------
def _rank(seed: int, tag: str, key: str) -> bytes:
    return hashlib.sha256(f"{seed}\0{tag}\0{key}".encode()).digest()


def draw(rows: list[dict], size: int | float, seed: int, tag: str) -> list[dict]:
    """`size` rows of `rows` (a share when a float): a seeded hash ranking, repeated whole when
    more rows are asked for than there are (upsampling)."""
    if isinstance(size, float):
        size = int(round(size * len(rows)))
    if not rows or size <= 0:
        return []
    order = sorted(range(len(rows)), key=lambda i: _rank(seed, tag, _row_key(rows[i], i)))
    picked = order * (size // len(rows)) + order[: size % len(rows)]
    return [rows[i] for i in picked]


def _row_key(row: dict, i: int) -> str:
    rid = (row.get("metadata") or {}).get("id") if isinstance(row, dict) else None
    return str(rid) if rid else f"#{i}"


def apply_recipe(recipe: dict, base: Path, written: dict[str, list[dict]] | None = None) -> list[dict]:
    """The mix a recipe describes: each source drawn in recipe order, then one seeded shuffle.
    written: sources by path that were just written from these rows (not read back)."""
    seed = recipe.get("seed", 0)
    out: list[tuple[bytes, dict]] = []
    seen: dict[str, int] = {}
    for entry in recipe.get("datasets") or []:
        path = base / entry["path"]
        rows = (written or {}).get(entry["path"])
        if rows is None:
            rows = read_jsonl(path, missing_ok=False, hint="rebuild the mix with `kdc compile`")
        for row in draw(rows, entry["sampling_size"], seed, entry["path"]):
            key = f"{entry['path']}\0{_row_key(row, 0)}"
            seen[key] = seen.get(key, 0) + 1  # upsampled copies shuffle apart
            out.append((_rank(seed, "shuffle", f"{key}\0{seen[key]}"), row))
    out.sort(key=lambda pair: pair[0])
    return [row for _, row in out]


def rebuild_mix(recipe_path: Path) -> list[dict]:
    """Rebuild a mix from its recipe: the same rows in the same order as the mix file."""
    recipe_path = Path(recipe_path)
    try:
        data = load_file(recipe_path).data
    except (OSError, YamlLoadError) as exc:
        msg = exc.issue.message if isinstance(exc, YamlLoadError) else str(exc)
        raise BuildError(f"cannot read mix recipe: {msg}", path=str(recipe_path),
                         hint="recipes are written by `kdc compile` beside each mix") from None
    _check_recipe(data, recipe_path)
    return apply_recipe(data, recipe_path.parent)


def _check_recipe(data: Any, path: Path) -> None:
    hint = "a recipe is `datasets: [{path: FILE, sampling_size: N}]` and `seed: N`"
    if not isinstance(data, dict) or not isinstance(data.get("datasets", []), list):
        raise BuildError("mix recipe must be a mapping with a `datasets` list", path=str(path), hint=hint)
    if not isinstance(data.get("seed", 0), int):
        raise BuildError("mix recipe `seed` must be an integer", path=str(path), hint=hint)
    for i, entry in enumerate(data.get("datasets") or []):
        size = entry.get("sampling_size") if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) \
                or isinstance(size, bool) or not isinstance(size, (int, float)) or size < 0:
            raise BuildError(f"mix recipe dataset {i} needs a `path` and a non-negative `sampling_size`",
                             path=str(path), hint=hint)
        if not (path.parent / entry["path"]).is_file():
            raise BuildError(f"mix recipe dataset {i}: {entry['path']} does not exist", path=str(path),
                             hint="rebuild the mix with `kdc compile` (the sources live under mixes/sources/)")


# ---------------------------------------------------------------- building ------------------
def _node_count(n: int, cfg: MixConfig) -> int:
    if n == 0:
        return 0
    if cfg.per_node_cap is not None:
        n = min(n, cfg.per_node_cap)
    return max(n, cfg.per_node_floor)


def phase2_counts(synthetic: int, seeds: int, phase1: int, cfg: MixConfig) -> tuple[int, int]:
    """(seed rows, replay rows) for phase 2, from the synthetic skill rows it holds.

    Seeds fill at most `seed_share` of the total; replay aims at `replay_share` of it, but never
    repeats phase 1. Without synthetic skill rows the seeds are all the skill data there is."""
    r, s = cfg.replay_share, cfg.seed_share
    if synthetic == 0:
        k = seeds
    else:
        k = min(seeds, math.floor(s / (1.0 - r - s) * synthetic + 1e-9))
    replay = min(phase1, int(round(r / (1.0 - r) * (synthetic + k)))) if r > 0 else 0
    return k, replay


def build_mixes(out_dir: Path, taxonomy: Taxonomy, accepted: dict[str, list[Sample]],
                train_seeds: dict[str, list[Seed]], config: MixConfig,
                chunks: dict[str, list[Chunk]] | None = None, views: dict[str, list[dict]] | None = None) -> dict:
    """Write mixes/phase1_knowledge.jsonl and mixes/phase2_skills.jsonl, their sources and a recipe
    beside each (all atomically); return the manifest's `mixes` section. `views`: each knowledge
    leaf's views.jsonl lines (accepted ones become content rows)."""
    out_dir = Path(out_dir)
    mixes = builddir.mixes_dir(out_dir)
    kinds = {leaf.node_id: leaf.kind for leaf in taxonomy.leaves()}

    def kind_of(node_id: str) -> str:
        samples = accepted.get(node_id) or []
        return kinds.get(node_id) or (samples[0].metadata.get("kind") if samples else "") or ""

    section: dict[str, Any] = {}
    written = _Written()
    # phase 1: knowledge
    p1_sets, p1_nodes = [], {}
    chunks = chunks or {}
    pool = [c for n in sorted(chunks) for c in chunks[n]]
    for node_id in sorted(n for n in accepted if kind_of(n) == "knowledge"):
        if not accepted[node_id]:
            continue
        by_kind = knowmix.leaf_rows(node_id, accepted[node_id], chunks.get(node_id) or [], pool,
                                    distractors=config.raft_distractors, gold_share=config.raft_gold_share,
                                    seed=config.seed, views=(views or {}).get(node_id) or (),
                                    view_kinds=config.content_views)
        counts = knowmix.kind_counts({k: len(v) for k, v in by_kind.items()}, config.knowledge_shares,
                                     config.per_node_cap, config.per_node_floor)
        for row_kind, rows in by_kind.items():
            if rows and counts[row_kind]:
                rel = _write_source(mixes, f"sources/{PHASE1}/{node_id}/{row_kind}.jsonl", rows, written)
                p1_sets.append({"path": rel, "sampling_size": counts[row_kind]})
        p1_nodes[node_id] = {"available": len(accepted[node_id]), "rows": sum(counts.values()),
                             "row_kinds": {k: v for k, v in counts.items() if v}}
    p1_rows = _write_mix(mixes, PHASE1, p1_sets, config.seed, written)
    section[PHASE1] = _summary(PHASE1, p1_rows, p1_nodes)

    # phase 2: skills + replay + seeds
    p2_sets, p2_nodes, synthetic = [], {}, 0
    for node_id in sorted(n for n in accepted if kind_of(n) in SKILL_KINDS):
        rows = [sample_row(s) for s in accepted[node_id]]
        if rows:
            rel = _write_source(mixes, f"sources/{PHASE2}/{node_id}.jsonl", rows, written)
            n = _node_count(len(rows), config)
            p2_sets.append({"path": rel, "sampling_size": n})
            p2_nodes[node_id] = {"available": len(rows), "rows": n}
            synthetic += n
    seed_rows, seeds_skipped = [], 0
    for node_id in sorted(train_seeds):
        if kinds.get(node_id, "") == "foundational_skill":
            continue
        samples = accepted.get(node_id) or []
        if kinds.get(node_id) == "knowledge" or any(s.record.reasoning for s in samples):
            # Seeds carry no reasoning: beside synthetic rows that reason they would teach phase 2 to
            # skip the steps (and knowledge seeds are the held-out side of phase 1's material).
            seeds_skipped += sum(1 for sd in train_seeds[node_id] if sd.question and sd.answer)
            continue
        system = next((m["content"] for s in samples[:1] for m in s.messages if m.get("role") == "system"), None)
        seed_rows.extend(seed_row(node_id, i, sd, system) for i, sd in enumerate(train_seeds[node_id])
                         if sd.question and sd.answer)
    n_seeds, n_replay = phase2_counts(synthetic, len(seed_rows), len(p1_rows), config)
    if n_replay:
        replay_rows = [{"messages": r["messages"], "metadata": {**r["metadata"], "source": "replay"}}
                       for r in p1_rows]
        rel = _write_source(mixes, f"sources/{PHASE2}/replay_{PHASE1}.jsonl", replay_rows, written)
        p2_sets.append({"path": rel, "sampling_size": n_replay})
    if n_seeds:
        rel = _write_source(mixes, f"sources/{PHASE2}/seeds.jsonl", seed_rows, written)
        p2_sets.append({"path": rel, "sampling_size": n_seeds})
    p2_rows = _write_mix(mixes, PHASE2, p2_sets, config.seed, written)
    section[PHASE2] = _summary(PHASE2, p2_rows, p2_nodes)
    section[PHASE2]["seeds_available"] = len(seed_rows)
    section[PHASE2]["seeds_skipped_reasoning"] = seeds_skipped
    _remove_stale_sources(mixes, {d["path"] for d in p1_sets + p2_sets})
    return section


def _remove_stale_sources(mixes: Path, keep: set[str]) -> None:
    """Sources of leaves that left the tree (or of an empty replay/seed share) go, so that
    mixes/sources/ holds exactly what the recipes name."""
    builddir.settle_writes()  # every source being written is there before anything is removed
    root = mixes / "sources"
    if not root.is_dir():
        return
    for path in sorted(root.rglob("*.jsonl")):
        if path.relative_to(mixes).as_posix() not in keep:
            path.unlink()
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()


def _summary(phase: str, rows: list[dict], nodes: dict) -> dict:
    by_source: dict[str, int] = {}
    by_kind: dict[str, int] = {}
    for row in rows:
        src = row["metadata"]["source"]
        by_source[src] = by_source.get(src, 0) + 1
        kind = row["metadata"].get("row_kind", "")
        by_kind[kind] = by_kind.get(kind, 0) + 1
    total = len(rows)
    return {**builddir.mix_files(phase), "rows": total,
            "by_source": dict(sorted(by_source.items())),
            "shares": {k: round(v / total, 4) for k, v in sorted(by_source.items())} if total else {},
            "row_kinds": {k: round(v / total, 4) for k, v in sorted(by_kind.items())} if total else {},
            "nodes": nodes}


class _Written:
    """The sources written so far in this build, by path, and each row's JSON line: the mixes are
    drawn from these rows and reuse their lines instead of reading back and re-serialising them
    (the same bytes: the rows are plain JSON values, which a round trip leaves as they were)."""

    def __init__(self) -> None:
        self.rows: dict[str, list[dict]] = {}
        self.lines: dict[int, str] = {}  # id(row) -> its line; the rows stay alive in `rows`

    def line(self, row: dict) -> str:
        return self.lines.get(id(row)) or _dumps(row) + "\n"


def _write_mix(mixes: Path, phase: str, datasets: list[dict], seed: int, written: _Written) -> list[dict]:
    recipe = {"datasets": datasets, "seed": seed}
    header = (f"# kdc mix recipe for {phase}.jsonl: rebuild it with compiler.mix.phases.rebuild_mix(this file).\n"
              "# sampling_size: rows drawn from the file (a float: a share of it); paths are relative to here.\n")
    builddir.write_mix_file(mixes, f"{phase}.recipe.yaml", header + yaml.safe_dump(recipe, sort_keys=False,
                                                                                allow_unicode=True))
    rows = apply_recipe(recipe, mixes, written.rows)
    builddir.write_mix_file(mixes, f"{phase}.jsonl", "".join(map(written.line, rows)))
    return rows


def _write_source(mixes: Path, rel: str, rows: list[dict], written: _Written) -> str:
    lines = [_dumps(r) + "\n" for r in rows]
    builddir.write_mix_file(mixes, rel, "".join(lines))
    written.rows[rel] = rows
    written.lines.update(zip(map(id, rows), lines))
    return rel


_ENCODER = json.JSONEncoder(ensure_ascii=False)  # shared: json.dumps with options builds one per call


def _dumps(row: dict) -> str:
    return _ENCODER.encode(row)



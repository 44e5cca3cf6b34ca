"""The dataset card: BUILD_DIR/README.md in Hugging Face dataset-card form.

Whoever picks the data up later (a hub page, a colleague) must be able to tell how it was made
without kdc: which taxonomy (by content hash), teacher, judge and templates; how many samples
each node got and why candidates were rejected; what every provenance field means.
The YAML header is written with yaml.safe_dump; user text in the Markdown body is escaped so
it cannot inject HTML into a hub page or break a table.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from compiler.io.builddir import MANIFEST, BuildDir, load_build, write_card_file
from compiler.report.stats import REASON_HELP, NodeStat, node_stats, total_usd

LICENSE_LINE = re.compile(r"^\s*license of the work\s*:\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)


def md(text: Any) -> str:
    """User text made safe for Markdown (a table cell): no HTML, no markup, one line."""
    s = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = re.sub(r"([\\`*_\[\]|#])", r"\\\1", s)
    return re.sub(r"\s+", " ", s).strip()


def code(text: Any) -> str:
    return f"<code>{md(text)}</code>"


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def node_licenses(view: BuildDir) -> dict[str, str]:
    """License per node from the leaf's attribution.txt (InstructLab convention), where readable."""
    root = view.manifest.taxonomy.get("root")
    out: dict[str, str] = {}
    if not root:
        return out
    base = Path(str(root))
    if not base.is_absolute():
        base = (view.root / base) if (view.root / base).is_dir() else base
    for node_id in view.nodes:
        f = base.joinpath(*node_id.split("/"), "attribution.txt")
        try:
            found = LICENSE_LINE.search(f.read_text(encoding="utf-8", errors="replace")[:20000])
        except OSError:
            continue
        if found:
            out[node_id] = found.group(1)[:100]
    return out


def _hub_license(licenses: set[str]) -> str:
    if len(licenses) == 1:
        one = next(iter(licenses)).strip().lower()
        if re.fullmatch(r"[a-z0-9.\-+]+", one):
            return one
    return "other"


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "n>1M"


def _config_name(node_id: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_]+", "_", node_id).strip("_") or "node"
    name, k = base, 2
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name


def front_matter(view: BuildDir, stats: list[NodeStat], licenses: dict[str, str]) -> dict[str, Any]:
    tax = view.manifest.taxonomy
    taken: set[str] = set()
    configs = []
    evals = []  # eval lines have their own columns: one config for all of them, not a split per node
    for s in stats:
        files = view.nodes[s.node_id].files
        configs.append({"config_name": _config_name(s.node_id, taken), "data_files": [
            {"split": "train", "path": files["train"]}]})
        if s.eval_seeds:
            evals.append(files["eval"])
    if evals:
        configs.append({"config_name": _config_name("eval_seeds", taken),
                        "data_files": [{"split": "test", "path": evals}]})
    for name, mix in sorted(view.manifest.mixes.items()):
        if isinstance(mix, dict) and mix.get("path"):
            configs.append({"config_name": _config_name(f"mix_{name}", taken),
                            "data_files": [{"split": "train", "path": str(mix["path"])}]})
    return {
        "pretty_name": f"kdc build of {Path(str(tax.get('root') or 'taxonomy')).name}",
        "license": _hub_license(set(licenses.values())),
        "language": ["en"],
        "task_categories": ["text-generation", "question-answering"],
        "tags": ["synthetic", "instructlab", "taxonomy", "chain-of-thought", "kdc"],
        "size_categories": [_size_category(sum(s.accepted for s in stats))],
        "configs": configs,
    }


FIELDS = """\
Each line of `nodes/<node_id>/train.jsonl` is one sample:

| field | meaning |
|---|---|
| `id` | content hash of the request that produced the sample; stable across runs, used by reviews |
| `node_id` | the taxonomy leaf (folder path) the sample teaches — review it against that leaf |
| `messages` | the chat form used for training: system, user (question with its context), assistant (reasoning then answer) |
| `record` | the structured answer: `question`, `reasoning` (list of steps), `answer`, `context` |
| `metadata.leaf_path`, `metadata.kind` | where in the tree the leaf sits, and its kind (knowledge, freeform_skill, grounded_skill) |
| `metadata.seeds_shown` | which of the leaf's training seed examples were in the prompt (indexes) |
| `metadata.document` | knowledge only: the document repo, commit, file and character span (`start`, `end`, `sha256`) the sample is grounded in |
| `metadata.template` | the prompt template's name and sha256 |
| `metadata.teacher` | the teacher model and sampling settings (temperature, top_p, max_tokens, seed) |
| `metadata.prompt_sha256`, `sample_index`, `attempts` | the exact prompt's hash, which sample of the node it is, how many teacher calls it took |
| `metadata.usage` | prompt and completion tokens of the call |
| `metadata.diversity` | the persona, difficulty and style the prompt asked for |
| `metadata.gates` | gate scores: `grounding` (0–1, share supported by the source) and `judge` (1–5 per criterion) |
| `metadata.review` | after `kdc review --apply`: the human verdict, who gave it, when and why |

`rejected.jsonl` holds every candidate that did not make it with a `reason` code, a `detail` and the
raw teacher output; `eval.jsonl` holds seed examples held out from the teacher for evaluation.
"""


def render_card(view: BuildDir) -> str:
    stats = node_stats(view)
    m = view.manifest
    tax, teacher, judge = m.taxonomy, m.teacher, m.judge
    sampling = teacher.get("sampling")
    templates, versions = m.templates, m.versions
    licenses = node_licenses(view)
    meta = front_matter(view, stats, licenses)
    header = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    accepted = sum(s.accepted for s in stats)
    target = sum(s.target for s in stats)
    kinds = sorted({s.kind for s in stats})
    out = [f"---\n{header}---\n",
           f"# {md(meta['pretty_name'])}\n",
           "## Dataset summary\n",
           f"Synthetic chain-of-thought question/answer data compiled by kdc {md(m.kdc_version)} "
           f"from an InstructLab-style taxonomy: {len(stats)} leaf node(s) ({md(', '.join(kinds))}), "
           f"{accepted} accepted sample(s) against a target of {target}. Every sample names the taxonomy node "
           "it teaches and carries its full provenance, so domain experts can review it.\n",
           "Each node's train set, the held-out eval seeds and each training mix is a `configs` entry of this "
           "card, so `datasets.load_dataset(\"<build folder>\", \"<config_name>\")` loads the JSONL files as they "
           "are.\n",
           "## How it was made\n",
           "| | |\n|---|---|",
           f"| taxonomy root | {code(tax.get('root', '?'))} |",
           f"| taxonomy content hash (sha256) | {code(tax.get('content_hash', '?'))} |",
           f"| teacher model | {code(teacher.get('model', '?'))} |",
           f"| teacher sampling | {code(json.dumps(sampling, sort_keys=True)) if sampling else '—'} |",
           f"| judge model | {code(judge.get('model')) if judge.get('model') else 'none'} |",
           f"| kdc version | {code(m.kdc_version)} |",
           f"| teacher tokens | {sum(s.prompt_tokens for s in stats):,} prompt, "
           f"{sum(s.completion_tokens for s in stats):,} completion |",
           f"| teacher cost (USD) | {total_usd(stats)} |"]
    for name, sha in sorted(templates.items()):
        out.append(f"| template {code(name)} | {code(sha)} |")
    for name, ver in sorted(versions.items()):
        out.append(f"| {md(name)} version | {code(ver)} |")
    out.append("")

    out += ["## Counts per node\n",
            "| node | kind | target | accepted | shortfall | rejected | eval seeds | reviewed | review-rejected "
            "| flagged | license |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for s in stats:
        out.append(f"| {code(s.node_id)} | {md(s.kind)} | {s.target} | {s.accepted} | {s.shortfall} | "
                   f"{sum(s.rejected.values())} | {s.eval_seeds} | {s.review.get('reviewed', 0)} | "
                   f"{s.review.get('rejected', 0)} | {'**yes**' if s.flagged else 'no'} | "
                   f"{md(licenses.get(s.node_id, 'see taxonomy'))} |")
    out.append("")

    cov = [s for s in stats if s.coverage]
    if cov:
        out += ["## Knowledge coverage\n",
                "Chunks of each knowledge leaf's documents, and those that ground at least one accepted Q&A "
                "(the content rows of the knowledge mix carry every chunk).\n",
                "| node | chunks | covered | share |", "|---|---:|---:|---:|"]
        out += [f"| {code(s.node_id)} | {s.coverage.get('chunks', 0)} | {s.coverage.get('covered', 0)} | "
                f"{100 * float(s.coverage.get('share') or 0):.0f} % |" for s in cov]
        out.append("")
    reasons = sorted({r for s in stats for r in s.rejected})
    out.append("## Rejection reasons\n")
    if reasons:
        out += ["| reason | meaning | count | by node |", "|---|---|---:|---|"]
        for r in reasons:
            per = ", ".join(f"{code(s.node_id)}: {s.rejected[r]}" for s in stats if s.rejected.get(r))
            out.append(f"| {code(r)} | {md(REASON_HELP.get(r, '—'))} | "
                       f"{sum(s.rejected.get(r, 0) for s in stats)} | {per} |")
    else:
        out.append("No candidate was rejected.")
    out.append("")

    mixes = m.mixes
    if mixes:
        out += ["## Training mixes\n", "| mix | file | rows | by source |", "|---|---|---:|---|"]
        for name, mix in sorted(mixes.items()):
            mix = _dict(mix)
            by = ", ".join(f"{md(k)}: {md(v)}" for k, v in sorted(_dict(mix.get("by_source")).items()))
            out.append(f"| {code(name)} | {code(mix.get('path', '?'))} | {md(mix.get('rows', '?'))} | {by or '—'} |")
        out += ["", "Phase 1 trains on knowledge; phase 2 on skills plus a replay of phase 1 and the seed "
                "examples. Each mix has a `.recipe.yaml` next to it that records how it was drawn.", ""]

    flagged = [s for s in stats if s.flagged]
    out += ["## Human review\n",
            "`kdc review BUILD_DIR` draws a seeded 5–10 % sample of each node into a sheet for an expert; "
            "`kdc review BUILD_DIR --apply SHEET` drops what they rejected (moved to `rejected.jsonl` with "
            "reason `review-rejected`), applies their edits and records each verdict (who, when, why) in "
            "`reviews/verdicts.jsonl` and in the sample's `metadata.review`. The next `kdc compile` tops the "
            "quota up. A node is flagged when more than half of its reviewed samples were rejected.\n"]
    reviewed = sum(int(s.review.get("reviewed", 0) or 0) for s in stats)
    out.append(f"Reviewed so far: {reviewed} sample(s)." + (
        " Flagged nodes: " + ", ".join(code(s.node_id) for s in flagged) + "." if flagged else ""))
    out.append("")

    out += ["## Data fields and provenance\n", FIELDS,
            "## License and provenance\n",
            "The samples were written by the teacher model named above, prompted with the taxonomy's seed "
            "examples and (knowledge nodes) passages of the documents at the commits recorded in "
            "`metadata.document`. The license of each node's seed material is the one in its "
            "`attribution.txt` (column *license* above); the header's `license` is that license when all "
            "nodes agree, else `other`. Check the teacher model's terms of use before redistributing "
            "generated data.\n",
            "## Reproducing\n",
            "Re-running `kdc compile` on a tree with the same content hash, with the same teacher, templates "
            f"and settings (`{MANIFEST}` → `config`) reproduces the datasets byte for byte; cached teacher "
            "calls are reused from `.kdc/cache.sqlite`.\n"]
    return "\n".join(out)


def write_card(build_dir: str | Path) -> Path:
    """Write BUILD_DIR/README.md (the dataset card); returns its path."""
    view = load_build(build_dir)
    return write_card_file(view.root, render_card(view))

"""`kdc report`: the build as one self-contained HTML page.

People would rather look at a plot than read a manifest, and the page must open anywhere (an
air-gapped laptop, a CI artefact): so the plots are SVG (report/svg.py), inline, with no script, no
font, no link to fetch. Taxonomy text is untrusted, so every piece of it goes through
`html.escape` and a Content-Security-Policy forbids scripts outright.

The build is read through compiler/io/builddir.py and its figures through report/stats.py, as
the card does, so the two views agree.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

from compiler import __version__
from compiler.io.builddir import BuildDir, Provenance, load_build, write_report_file
from compiler.report.stats import NodeStat, node_stats, total_usd
from compiler.report.svg import PALETTE, _fmt, _nice_max, hbar_chart, histogram, tree_svg

# ---------------------------------------------------------------------------------------------
# The page

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#222;background:#fafafa}
header,main{max-width:1480px;margin:0 auto;padding:0 24px}
header{padding-top:18px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:26px 0 8px}
.meta{color:#555;margin:2px 0}.meta code{font-size:12px}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:14px 0}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:96px}
.card b{display:block;font-size:20px}.card span{color:#666;font-size:12px}
.flag{background:#fdecea;border:1px solid #D55E00;border-radius:6px;padding:8px 12px;margin:12px 0}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:14px}
figure.plot{background:#fff;border:1px solid #ddd;border-radius:6px;margin:0;padding:10px;overflow-x:auto}
figcaption{font-weight:600;margin-bottom:6px}figcaption small{font-weight:400;color:#666}
.grid svg.chart{width:100%;height:auto}
svg.chart text{font-size:11px;fill:#333}svg.chart .tick{fill:#666;font-size:10px}
svg.chart .axis,svg.chart .edge{stroke:#999;fill:none;stroke-width:1}
svg.chart .empty{fill:#999;font-style:italic}svg.chart .leaf{font-weight:600}
table{border-collapse:collapse;background:#fff;font-size:13px}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right;vertical-align:top}
th{background:#f0f0f0}td.id,th.id{text-align:left;font-family:ui-monospace,monospace;font-size:12px}
tr.flagged td{background:#fdecea}
details{background:#fff;border:1px solid #ddd;border-radius:6px;margin:6px 0;padding:6px 10px}
summary{cursor:pointer;font-family:ui-monospace,monospace;font-size:12px}
.sample{border-top:1px solid #eee;padding:6px 0}.sample p{margin:3px 0;white-space:pre-wrap}
.sample ol{margin:3px 0}.small{color:#666;font-size:12px}
footer{max-width:1480px;margin:30px auto;padding:0 24px;color:#888;font-size:12px}
"""

def _plot(key: str, title: str, svg: str, note: str = "") -> str:
    small = f" <small>{escape(note)}</small>" if note else ""
    return (f'<figure class="plot" data-plot="{escape(key)}"><figcaption>{escape(title)}{small}'
            f"</figcaption>{svg}</figure>")


def plots(stats: list[NodeStat], judge_model: str | None = "?") -> list[tuple[str, str, str, str]]:
    """(key, title, svg, note) for every plot of the page, tree first."""
    ids = [s.node_id for s in stats]
    reasons = sorted({r for s in stats for r in s.rejected})
    rcolors = {r: PALETTE[i % len(PALETTE)] for i, r in enumerate(reasons)}
    qw = [w for s in stats for w in s.question_words]
    aw = [w for s in stats for w in s.answer_words]
    div_keys = [k for k in ("distinct_1", "distinct_2", "near_dup_rate") if any(k in s.diversity for s in stats)]
    div_keys += sorted({k for s in stats for k in s.diversity} - set(div_keys))
    judge = [v for s in stats for v in s.judge]
    return [
        ("taxonomy-tree", "Taxonomy tree", tree_svg(stats), "leaves: accepted / target"),
        ("target-vs-accepted", "Target vs accepted per node",
         hbar_chart([(s.node_id, [("target", s.target), ("accepted", s.accepted)]) for s in stats],
                    {"target": "#BBBBBB", "accepted": "#0072B2"}, stacked=False, label="target vs accepted",
                    notes={s.node_id: f"{s.accepted}/{s.target}" + (f" (short {s.shortfall})" if s.shortfall
                                                                    else "") for s in stats}), ""),
        ("rejections", "Rejection reasons per node",
         hbar_chart([(s.node_id, [(r, s.rejected.get(r, 0)) for r in reasons]) for s in stats], rcolors,
                    stacked=True, label="rejection reasons"), "candidates the gates or reviewers turned down"),
        ("question-lengths", "Question length", histogram(qw, 0, _nice_max(max(qw, default=1)), 10, "#56B4E9",
                                                          label="question lengths", xlabel="words"),
         "accepted samples, all nodes"),
        ("answer-lengths", "Answer length", histogram(aw, 0, _nice_max(max(aw, default=1)), 10, "#009E73",
                                                      label="answer lengths", xlabel="words"),
         "accepted samples, all nodes"),
        ("grounding-scores", "Grounding scores",
         histogram([v for s in stats for v in s.grounding], 0, 1, 10, "#E69F00", label="grounding scores",
                   xlabel="grounding (share of the answer supported by its source)"), "grounded and knowledge nodes"),
        ("judge-scores", "Judge scores",
         histogram(judge, 1, 5, 8, "#CC79A7", label="judge scores", xlabel="mean judge score (1–5)",
                   empty="no judge scores: this build ran without a judge model"
                   if not judge_model else "no data in this build"), ""),
        ("diversity", "Diversity per node",
         hbar_chart([(i, [(k, s.diversity.get(k, 0.0)) for k in div_keys]) for i, s in zip(ids, stats)],
                    {k: PALETTE[j % len(PALETTE)] for j, k in enumerate(div_keys)}, stacked=False,
                    label="diversity", notes={s.node_id: "" for s in stats}),
         "distinct-n: unique n-grams / all n-grams; near_dup_rate: share of near duplicates"),
        ("tokens-cost", "Teacher tokens and cost per node",
         hbar_chart([(s.node_id, [("prompt", s.prompt_tokens), ("completion", s.completion_tokens)])
                     for s in stats], {"prompt": "#56B4E9", "completion": "#0072B2"}, stacked=True,
                    label="tokens and cost",
                    notes={s.node_id: f"{s.prompt_tokens + s.completion_tokens:,} tok · {_usd(s.cost_usd)}"
                           for s in stats}), ""),
    ]


def _usd(v: float | None) -> str:
    return "cost unknown" if v is None else f"${v:.4f}"


def _cell(v: Any, cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return f"<td{c}>{escape(str(v))}</td>"


def _node_table(stats: list[NodeStat]) -> str:
    head = ("<tr><th class=id>node</th><th>kind</th><th>target</th><th>accepted</th><th>shortfall</th>"
            "<th class=id>rejected</th><th>eval seeds</th><th>tokens</th><th>cost $</th>"
            "<th>reviewed</th><th>review-rejected</th><th>flagged</th></tr>")
    rows = []
    for s in stats:
        rej = ", ".join(f"{k}: {v}" for k, v in s.rejected.items()) or "—"
        rows.append(f'<tr class="{"flagged" if s.flagged else ""}">' + _cell(s.node_id, "id") + _cell(s.kind)
                    + _cell(s.target) + _cell(s.accepted) + _cell(s.shortfall) + _cell(rej, "id")
                    + _cell(s.eval_seeds) + _cell(f"{s.prompt_tokens + s.completion_tokens:,}")
                    + _cell(_usd(s.cost_usd).lstrip("$")) + _cell(s.review.get("reviewed", 0))
                    + _cell(s.review.get("rejected", 0)) + _cell("yes" if s.flagged else "no") + "</tr>")
    cov = [s for s in stats if s.coverage]
    if cov:
        rows.append("</table><h3>Knowledge coverage</h3><p class=small>Chunks of the leaf's documents that "
                    "ground at least one accepted Q&amp;A (content rows carry every chunk).</p><table>"
                    "<tr><th class=id>node</th><th>chunks</th><th>covered</th><th>share</th></tr>")
        rows += ["<tr>" + _cell(s.node_id, "id") + _cell(s.coverage.get("chunks", 0))
                 + _cell(s.coverage.get("covered", 0)) + _cell(f"{100 * (s.coverage.get('share') or 0):.0f} %")
                 + "</tr>" for s in cov]
    return "<table>" + head + "".join(rows) + "</table>"


def _sample_html(s: dict[str, Any]) -> str:
    rec = s.get("record") or {}
    steps = rec.get("reasoning") or []
    steps = steps if isinstance(steps, list) else [steps]
    review = Provenance.from_json(s.get("metadata")).review
    rv = (f' · review: {escape(str(review.get("verdict")))} by {escape(str(review.get("by")))}'
          if review is not None else "")
    ctx = rec.get("context")
    return ('<div class="sample">'
            f'<p class="small">{escape(str(s.get("id", "")))}{rv}</p>'
            f"<p><b>Q:</b> {escape(str(rec.get('question', '')))}</p>"
            + ("<ol>" + "".join(f"<li>{escape(str(x))}</li>" for x in steps) + "</ol>" if steps else "")
            + f"<p><b>A:</b> {escape(str(rec.get('answer', '')))}</p>"
            + (f'<p class="small">context: {escape(str(ctx)[:400])}</p>' if ctx else "") + "</div>")


def render_report(view: BuildDir, per_node: int = 3) -> str:
    stats = node_stats(view)
    m = view.manifest
    tax, teacher, judge, templates = m.taxonomy, m.teacher, m.judge, m.templates
    totals = {
        "nodes": len(stats), "target": sum(s.target for s in stats), "accepted": sum(s.accepted for s in stats),
        "shortfall": sum(s.shortfall for s in stats), "rejected": sum(sum(s.rejected.values()) for s in stats),
        "tokens": sum(s.prompt_tokens + s.completion_tokens for s in stats),
        "cost $": total_usd(stats),
        "reviewed": sum(s.review.get("reviewed", 0) for s in stats)}
    cards = "".join(f'<div class="card"><b>{escape(_fmt(v) if isinstance(v, (int, float)) else str(v))}</b>'
                    f"<span>{escape(k)}</span></div>" for k, v in totals.items())
    flagged = [s for s in stats if s.flagged]
    banner = ""
    if flagged:
        banner = ('<div class="flag" data-flagged="' + str(len(flagged)) + '"><b>Review flagged '
                  + str(len(flagged)) + " node(s)</b>: most of their reviewed sample was rejected — "
                  + ", ".join(f"<code>{escape(s.node_id)}</code> ({s.review.get('rejected', 0)} of "
                              f"{s.review.get('reviewed', 0)} rejected)" for s in flagged) + "</div>")
    figs = plots(stats, judge.get("model"))
    tree, rest = figs[0], figs[1:]
    samples = []
    for s in stats:
        rows = view.train.get(s.node_id, [])[:per_node]
        rej = view.rejected.get(s.node_id, [])[:per_node]
        rej_html = "".join(f'<p class="small">rejected <b>{escape(str(r.get("reason", "")))}</b>: '
                           f'{escape(str(r.get("detail", ""))[:300])}</p>' for r in rej)
        samples.append(f"<details><summary>{escape(s.node_id)} — {s.accepted} accepted</summary>"
                       + ("".join(_sample_html(x) for x in rows) or '<p class="small">no accepted samples</p>')
                       + rej_html + "</details>")
    tmpl = ", ".join(f"{escape(str(k))} <code>{escape(str(v)[:12])}</code>" for k, v in sorted(templates.items()))
    sampling = teacher.get("sampling")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>kdc report — {escape(str(tax.get("root") or view.root.name))}</title>
<style>{CSS}</style></head>
<body><header>
<h1>kdc build report</h1>
<p class="meta">taxonomy <code>{escape(str(tax.get("root", "?")))}</code> · content sha256
 <code>{escape(str(tax.get("content_hash", "?")))}</code></p>
<p class="meta">teacher <code>{escape(str(teacher.get("model", "?")))}</code>
 {escape(json.dumps(sampling, sort_keys=True)) if isinstance(sampling, dict) else ""} · judge
 <code>{escape(str(judge.get("model") or "none"))}</code> · kdc {escape(m.kdc_version)}</p>
<p class="meta">templates: {tmpl or "—"}</p>
<div class="cards">{cards}</div>{banner}
</header><main>
<h2>Taxonomy</h2>{_plot(tree[0], tree[1], tree[2], tree[3])}
<h2>Plots</h2><div class="grid">{"".join(_plot(*f) for f in rest)}</div>
<h2>Nodes</h2>{_node_table(stats)}
<h2>Samples</h2><p class="small">the first {per_node} accepted samples and rejections of each node</p>
{"".join(samples)}
</main><footer>written by kdc {escape(__version__)} from {escape(str(view.root))} · no scripts, no network</footer>
</body></html>
"""


def write_report(build_dir: str | Path) -> Path:
    """Write BUILD_DIR/report.html from the build directory; returns its path."""
    view = load_build(build_dir)
    return write_report_file(view.root, render_report(view))

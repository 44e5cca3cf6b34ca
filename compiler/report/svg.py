"""SVG charts for `kdc report`: horizontal bars, histograms and the taxonomy tree.

Drawn by hand because the page must work offline under a no-script Content-Security-Policy
(plotly and Vega need JavaScript; matplotlib is heavy for a few bars). Every data mark carries
class="mark" and a <title> tooltip; every label goes through `html.escape` (taxonomy text is
untrusted).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import Callable, Protocol


class TreeStat(Protocol):
    """What tree_svg needs of a node's figures (report.html.NodeStat has it)."""

    node_id: str
    kind: str
    target: int
    accepted: int
    shortfall: int

    @property
    def flagged(self) -> bool: ...


PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#8C6D1F", "#7F7F7F",
           "#1B9E77", "#7570B3", "#E7298A", "#66A61E", "#A6761D", "#444444"]
WIDTH = 700
LABEL_W = 250
FONT = 11


def _fmt(v: float) -> str:
    if v == int(v):
        return f"{int(v):,}"
    return f"{v:.2f}" if abs(v) < 100 else f"{v:,.0f}"


def _short(node_id: str, n: int = 38) -> str:
    """The tail of a node id that fits n characters, cut at a folder boundary where possible."""
    if len(node_id) <= n:
        return node_id
    parts = node_id.split("/")
    tail = parts[-1]
    for p in reversed(parts[:-1]):
        if len(tail) + len(p) + 3 > n:
            break
        tail = f"{p}/{tail}"
    return "…/" + tail if len(tail) + 2 <= n else "…" + node_id[-(n - 1):]


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    mag = 10 ** math.floor(math.log10(v))
    for step in (1, 2, 2.5, 5, 10):
        if step * mag >= v:
            return step * mag
    return 10 * mag


def _svg(width: int, height: int, body: list[str], label: str) -> str:
    return (f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'role="img" aria-label="{escape(label)}">' + "".join(body) + "</svg>")


def _legend(series: list[tuple[str, str]], y: int = 12, x0: int = LABEL_W) -> list[str]:
    out, x = [], x0
    for name, color in series:
        out.append(f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{color}"/>'
                   f'<text x="{x + 14}" y="{y}" class="legend">{escape(name)}</text>')
        x += 24 + int(len(name) * FONT * 0.6)
    return out


def _empty(label: str, message: str) -> str:
    return _svg(WIDTH, 40, [f'<text x="8" y="24" class="empty">{escape(message)}</text>'], label)


def hbar_chart(rows: list[tuple[str, list[tuple[str, float]]]], colors: dict[str, str], *, stacked: bool,
               label: str, value_fmt: Callable[[float], str] = _fmt, notes: dict[str, str] | None = None) -> str:
    """Horizontal bars, one row per node: grouped (a bar per series) or stacked."""
    series = [s for s in colors if any(v > 0 or not stacked for r in rows for name, v in r[1] if name == s)]
    if not rows or not series:
        return _empty(label, "no data in this build")
    longest = max((len((notes or {}).get(name, value_fmt(0))) for name, _ in rows), default=4)
    plot_w = WIDTH - LABEL_W - max(40, int(longest * FONT * 0.6) + 12)
    top = 24
    bar_h = 14 if stacked else 9
    row_h = 22 if stacked else len(series) * (bar_h + 1) + 8
    vmax = _nice_max(max((sum(v for _, v in vals) if stacked else max((v for _, v in vals), default=0))
                         for _, vals in rows))
    height = top + row_h * len(rows) + 22
    body = _legend([(s, colors[s]) for s in series])
    for i, (name, vals) in enumerate(rows):
        y = top + i * row_h
        body.append(f'<text x="{LABEL_W - 6}" y="{y + row_h / 2 + 4:.1f}" class="label" text-anchor="end">'
                    f'<title>{escape(name)}</title>{escape(_short(name))}</text>')
        x = float(LABEL_W)
        for j, (s, v) in enumerate((s, v) for s, v in vals if s in series):
            w = max(0.0, v) / vmax * plot_w
            by = y + 4 if stacked else y + 4 + j * (bar_h + 1)
            bx = x if stacked else LABEL_W
            body.append(f'<rect class="mark" x="{bx:.1f}" y="{by:.1f}" width="{max(w, 0.0):.1f}" '
                        f'height="{bar_h}" fill="{colors[s]}"><title>{escape(name)} — {escape(s)}: '
                        f'{escape(value_fmt(v))}</title></rect>')
            if stacked:
                x += w
        total = sum(v for s, v in vals if s in series) if stacked else max((v for s, v in vals), default=0)
        note = (notes or {}).get(name, value_fmt(total))
        end = x if stacked else LABEL_W + max(0.0, total) / vmax * plot_w
        body.append(f'<text x="{end + 4:.1f}" y="{y + row_h / 2 + 4:.1f}" class="value">{escape(note)}</text>')
    axis_y = top + row_h * len(rows)
    body.append(f'<path class="axis" d="M{LABEL_W} {top} V{axis_y} H{LABEL_W + plot_w}"/>')
    for t in (0, vmax / 2, vmax):
        tx = LABEL_W + t / vmax * plot_w
        body.append(f'<text x="{tx:.1f}" y="{axis_y + 14}" class="tick" text-anchor="middle">'
                    f'{escape(value_fmt(t))}</text>')
    return _svg(WIDTH, height, body, label)


def histogram(values: list[float], lo: float, hi: float, bins: int, color: str, *, label: str,
              xlabel: str, empty: str = "no data in this build") -> str:
    """Counts of values in equal bins over [lo, hi] (the last bin closed)."""
    if not values:
        return _empty(label, empty)
    hi = hi if hi > lo else lo + 1
    counts = [0] * bins
    for v in values:
        k = int((min(max(v, lo), hi) - lo) / (hi - lo) * bins)
        counts[min(k, bins - 1)] += 1
    left, top, plot_w, plot_h = 50, 10, WIDTH - 80, 150
    cmax = _nice_max(max(counts))
    bw = plot_w / bins
    body = []
    for k, c in enumerate(counts):
        a, b = lo + k * (hi - lo) / bins, lo + (k + 1) * (hi - lo) / bins
        h = c / cmax * plot_h
        body.append(f'<rect class="mark" x="{left + k * bw + 1:.1f}" y="{top + plot_h - h:.1f}" '
                    f'width="{bw - 2:.1f}" height="{h:.1f}" fill="{color}">'
                    f'<title>{_fmt(a)}–{_fmt(b)}: {c}</title></rect>')
    body.append(f'<path class="axis" d="M{left} {top} V{top + plot_h} H{left + plot_w}"/>')
    for k in range(0, bins + 1, max(1, bins // 5)):
        x = left + k * bw
        body.append(f'<text x="{x:.1f}" y="{top + plot_h + 14}" class="tick" text-anchor="middle">'
                    f'{_fmt(round(lo + k * (hi - lo) / bins, 2))}</text>')
    for c in (0, cmax / 2, cmax):
        y = top + plot_h - c / cmax * plot_h
        body.append(f'<text x="{left - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{_fmt(c)}</text>')
    body.append(f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h + 30}" class="tick" '
                f'text-anchor="middle">{escape(xlabel)} (n = {len(values)})</text>')
    return _svg(WIDTH, top + plot_h + 38, body, label)


def tree_svg(stats: Sequence[TreeStat]) -> str:
    """The taxonomy as an indented tree: folders, then leaves with accepted / target."""
    by_id = {s.node_id: s for s in stats}
    paths = set()
    for node_id in by_id:
        parts = node_id.split("/")
        for i in range(1, len(parts) + 1):
            paths.add(tuple(parts[:i]))
    rows = sorted(paths)
    if not rows:
        return _empty("taxonomy tree", "no nodes in this build")
    row_h, indent, top = 20, 18, 10
    index = {p: i for i, p in enumerate(rows)}
    bx = int(max(12 + (len(p) - 1) * indent + 9 + (len(p[-1]) + 1) * FONT * 0.62 for p in rows)) + 16
    width = max(WIDTH, bx + 100 + 260)
    body = []
    for p, i in index.items():
        x, y = 12 + (len(p) - 1) * indent, top + i * row_h + 8
        if len(p) > 1:
            px, py = 12 + (len(p) - 2) * indent, top + index[p[:-1]] * row_h + 8
            body.append(f'<path class="edge" d="M{px} {py + 5} V{y} H{x - 5}"/>')
    for p, i in index.items():
        x, y = 12 + (len(p) - 1) * indent, top + i * row_h + 8
        node_id = "/".join(p)
        s = by_id.get(node_id)
        if s is None:
            body.append(f'<circle class="mark" cx="{x}" cy="{y}" r="4" fill="#bbbbbb"><title>'
                        f'{escape(node_id)}</title></circle>'
                        f'<text x="{x + 9}" y="{y + 4}" class="label">{escape(p[-1])}/</text>')
            continue
        color = "#D55E00" if s.flagged or s.shortfall else "#009E73"
        body.append(f'<circle class="mark" cx="{x}" cy="{y}" r="5" fill="{color}"><title>{escape(node_id)}: '
                    f'{s.accepted} / {s.target} accepted</title></circle>'
                    f'<text x="{x + 9}" y="{y + 4}" class="label leaf">{escape(p[-1])}</text>')
        frac = min(1.0, s.accepted / s.target) if s.target else (1.0 if s.accepted else 0.0)
        flag = " ⚑ review flagged" if s.flagged else ""
        body.append(f'<rect x="{bx}" y="{y - 5}" width="100" height="10" fill="#eeeeee"/>'
                    f'<rect class="mark" x="{bx}" y="{y - 5}" width="{100 * frac:.1f}" height="10" '
                    f'fill="{color}"><title>{s.accepted} of {s.target}</title></rect>'
                    f'<text x="{bx + 106}" y="{y + 4}" class="value">{s.accepted}/{s.target} '
                    f'{escape(s.kind)}{flag}</text>')
    return _svg(width, top + len(rows) * row_h + 6, body, "taxonomy tree")

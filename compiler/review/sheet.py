"""`kdc review`, the sheet: a seeded 5-10 % sample of every node drawn into a sheet (CSV for a
spreadsheet, or JSONL), and the sheet read back.

Each row shows the question, reasoning and answer with the seed examples and the chunk it came
from, and takes a verdict (accept / reject / edit), edits and a reason. A sheet (CSV, JSONL, or an xlsx workbook: compiler/review/xlsx.py) passes through
hands and spreadsheets, so reading it trusts nothing: broken quoting, unknown columns and bad
lines are refused with the line and column of each problem. What the rows mean is decided by
compiler/review/verdicts.py, and applying them by compiler/review/apply.py.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compiler.errors import ReviewError, UsageError
from compiler.io.builddir import BuildDir, load_build, load_verdicts, sheet_path
from compiler.io.fsutil import atomic_write, jsonl_text
from compiler.records import Leaf, Seed

COLUMNS = ("id", "node_id", "verdict", "why", "question", "reasoning", "answer", "edited_question",
           "edited_reasoning", "edited_answer", "context", "seed_examples", "seeds_shown", "source",
           "reviewer", "sha256")
# Shown to the reviewer, never applied: covered by the row's sha256.
READ_ONLY = ("id", "node_id", "question", "reasoning", "answer", "context", "seeds_shown", "seed_examples",
             "source")
FROM_BUILD = tuple(c for c in READ_ONLY if c != "seed_examples")  # re-derivable from the build alone
VERDICTS = ("accept", "reject", "edit")
MAX_PROBLEMS = 20


# ----------------------------------------------------------------------------------------- draw


def _text(v: Any) -> str:
    return "" if v is None else str(v).replace("\r\n", "\n")


def _steps(v: Any) -> list[str]:
    return [str(x) for x in v] if isinstance(v, list) else ([str(v)] if v else [])


def _source(meta: dict[str, Any]) -> str:
    doc = meta.get("document")
    if not isinstance(doc, dict):
        return ""
    page = doc.get("page")  # PDFs: the page(s) to open
    pages = "" if not page else f" p.{page}" + (f"-{doc['page_end']}" if doc.get("page_end", page) != page else "")
    return (f"{doc.get('repo', '?')}@{str(doc.get('commit', '?'))[:12]}:{doc.get('file', '?')}"
            f"[{doc.get('start', '?')}:{doc.get('end', '?')}]{pages} sha256:{str(doc.get('sha256', '?'))[:12]}")


def training_seeds(view: BuildDir, node_id: str) -> list[Seed] | None:
    """The leaf's seed examples minus those held out for eval (what `seeds_shown` indexes), if the
    qna.yaml the build came from is still there unchanged; None otherwise (never the wrong seeds)."""
    from compiler.io.yamlload import MAX_BYTES, YamlLoadError, loads  # the taxonomy is read only for this

    root = view.manifest.taxonomy.get("root")
    if not root:
        return None
    qna = Path(str(root)).joinpath(*node_id.split("/"), "qna.yaml")
    try:
        raw = qna.read_bytes()
        if len(raw) > MAX_BYTES:
            return None
        content = loads(raw.decode("utf-8")).data
    except (OSError, UnicodeDecodeError, YamlLoadError):
        return None
    built_from = {view.provenance(s).leaf_sha256 for s in view.train.get(node_id, [])} - {None}
    if not isinstance(content, dict) or (built_from and hashlib.sha256(raw).hexdigest() not in built_from):
        return None
    leaf = Leaf(node_id=node_id, file=str(qna), kind=view.nodes[node_id].kind,
                version=0, content=content, content_hash="")
    held = {e.get("seed_index") for e in view.evals.get(node_id, [])}
    return [s for i, s in enumerate(leaf.seeds()) if i not in held]


def _seed_text(shown: Any, seeds: list[Seed] | None) -> str:
    if seeds is None or not isinstance(shown, list):
        return ""
    out = []
    for i in shown:
        if isinstance(i, int) and 0 <= i < len(seeds):
            s = seeds[i]
            out.append(f"[{i}] Q: {s.question}\n    A: {s.answer}")
    return "\n".join(out)


def sheet_row(sample: dict[str, Any], seeds: list[Seed] | None, reviewer: str = "") -> dict[str, str]:
    """The sheet row of a sample: read-only provenance, empty editable columns, and the sha256."""
    rec = sample.get("record") if isinstance(sample.get("record"), dict) else {}
    meta = sample.get("metadata") if isinstance(sample.get("metadata"), dict) else {}
    shown = meta.get("seeds_shown")
    row = {c: "" for c in COLUMNS}
    row.update({
        "id": _text(sample.get("id")), "node_id": _text(sample.get("node_id")),
        "question": _text(rec.get("question")), "reasoning": "\n".join(_text(s) for s in _steps(rec.get("reasoning"))),
        "answer": _text(rec.get("answer")), "context": _text(rec.get("context")),
        "seeds_shown": ",".join(str(i) for i in shown) if isinstance(shown, list) else "",
        "seed_examples": _seed_text(shown, seeds), "source": _source(meta), "reviewer": reviewer})
    row["sha256"] = digest(row)
    return row


def digest(row: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps({c: row.get(c, "") for c in READ_ONLY}, sort_keys=True,
                                     ensure_ascii=False).encode("utf-8")).hexdigest()


def sample_size(n: int, share: float) -> int:
    """floor(share * n), at least 1: with share 0.1 that is 5-10 % of any node of 10+ samples."""
    return 0 if n == 0 else max(1, math.floor(share * n + 1e-9))


def draw_sheet(build_dir: str | Path, share: float = 0.1, seed: int | None = None, reviewer: str | None = None,
               fmt: str = "csv", out: str | Path | None = None) -> Path:
    """Write a review sheet with a seeded sample of each node's not-yet-reviewed samples."""
    if not (0 < share <= 1):
        raise UsageError(f"--share must be in (0, 1], got {share}", hint="0.1 reviews about 10 % of each node")
    if fmt not in ("csv", "jsonl", "xlsx"):
        raise UsageError(f"unknown sheet format {fmt!r}", hint="use csv, xlsx or jsonl")
    view = load_build(build_dir)
    if seed is None:
        seed = view.manifest.seed
    path = Path(out) if out else sheet_path(view.root, seed, fmt)
    if path.exists():
        raise ReviewError(f"{path} already exists; drawing again would overwrite a reviewer's work",
                          hint="apply or move it first, or pass --out FILE or another --seed")
    done = load_verdicts(view.root)
    rows = []
    for node_id, samples in sorted(view.train.items()):
        todo = [s for s in samples if str(s.get("id")) not in done]
        k = min(len(todo), sample_size(len(samples), share))
        if not k:
            continue
        rng = random.Random(f"kdc-review:{seed}:{node_id}")
        picked = set(rng.sample(range(len(todo)), k))
        seeds = training_seeds(view, node_id)
        rows += [sheet_row(s, seeds, reviewer or "") for i, s in enumerate(todo) if i in picked]
    if fmt == "xlsx":
        from compiler.review.xlsx import xlsx_bytes

        atomic_write(path, xlsx_bytes(rows, COLUMNS, VERDICTS))
    else:
        atomic_write(path, _csv_text(rows) if fmt == "csv" else jsonl_text(rows))
    return path


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell_out(v: str) -> str:
    """A spreadsheet must show untrusted text, not run it as a formula: prefix a quote (OWASP)."""
    return "'" + v if v.startswith(FORMULA_START) else v


def _cell_in(v: str) -> str:
    v = v.replace("\r\n", "\n")
    return v[1:] if v.startswith("'") and v[1:].startswith(FORMULA_START) else v


def _csv_text(rows: list[dict[str, str]]) -> str:
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=COLUMNS, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
    w.writeheader()
    w.writerows({k: _cell_out(v) for k, v in r.items()} for r in rows)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------- parse


@dataclass
class SheetRow:
    line: int  # 1-based line where the row starts
    values: dict[str, str]
    columns: dict[str, int] | None  # CSV: 1-based column of each field; JSONL: None
    sheet: str | None = None  # xlsx: the worksheet (line is its row number)


class _Problems:
    """Collects located problems so a reviewer can fix the whole sheet in one go."""

    def __init__(self, path: Path):
        self.path = path
        self.items: list[tuple[int, int | None, str]] = []

    def add(self, row: SheetRow | int, column: str | int | None, message: str) -> None:
        if isinstance(row, SheetRow):
            col = row.columns.get(column) if (row.columns and isinstance(column, str)) else None
            where = f"column {col} ({column})" if col else (f"field {column!r}" if column else "")
            if row.sheet and col:  # a workbook: the cell as the spreadsheet names it
                where = f"sheet {row.sheet!r} cell {_letter(col)}{row.line} ({column})"
            self.items.append((row.line, col, f"{where}: {message}" if where else message))
        else:
            self.items.append((row, column if isinstance(column, int) else None, message))

    def raise_if_any(self) -> None:
        if not self.items:
            return
        line, col, msg = self.items[0]
        more = "".join(f"\n  {self.path}:{ln}{f':{c}' if c else ''}: {m}" for ln, c, m in self.items[1:MAX_PROBLEMS])
        extra = len(self.items) - MAX_PROBLEMS
        raise ReviewError(msg + more + (f"\n  … and {extra} more" if extra > 0 else ""), path=str(self.path),
                          line=line, column=col,
                          hint="nothing was changed; fix the sheet (only verdict, why, reviewer and edited_* "
                               "may be changed) and apply it again")


def _letter(col: int) -> str:
    from openpyxl.utils import get_column_letter

    return get_column_letter(col)


def _line_offsets(text: str) -> list[int]:
    offs, pos = [0], 0
    for ln in text.splitlines(keepends=True):
        pos += len(ln)
        offs.append(pos)
    return offs


def _quote_problem(text: str, start: int, line: int) -> tuple[int, int, str] | None:
    """Where the CSV record starting at offset `start` (on `line`) breaks its quoting."""
    i, fieldno, col = start, 1, 1
    in_q = after_q = False
    at_start = True
    opened = (line, 1, 1)
    while i < len(text):
        c = text[i]
        if in_q:
            if c == '"':
                if text[i + 1:i + 2] == '"':
                    i, col = i + 1, col + 1
                else:
                    in_q, after_q = False, True
            elif c == "\n":
                line, col = line + 1, 0
        elif after_q:
            if c == ",":
                fieldno, at_start, after_q = fieldno + 1, True, False
            elif c in "\r\n":
                return None
            else:
                at = f"character {col}" if line == opened[0] else f"line {line} character {col}"
                return (opened[0], opened[1], f"the quoted field opened at character {opened[2]} is followed by "
                        f"text after its closing quote ({at}): a quote inside a quoted field must be doubled "
                        '("") — or a closing quote is missing')
        elif c == '"' and at_start:
            in_q, at_start, opened = True, False, (line, fieldno, col)
        elif c == ",":
            fieldno, at_start = fieldno + 1, True
        elif c in "\r\n":
            return None
        else:
            at_start = False
        i, col = i + 1, col + 1
    if in_q:
        return (opened[0], opened[1], f"character {opened[2]}: a quoted field is never closed "
                                      "(missing closing quote)")
    return None


def _parse_csv(path: Path, text: str, problems: _Problems) -> list[SheetRow]:
    offsets = _line_offsets(text)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[SheetRow] = []
    header: list[str] | None = None
    start = 1
    try:
        for record in reader:
            line, start = start, reader.line_num + 1
            if not record or (len(record) == 1 and not record[0].strip()):
                continue
            if header is None:
                header = [h.strip() for h in record]
                missing = [c for c in COLUMNS if c not in header]
                unknown = [h for h in header if h not in COLUMNS]
                dup = [h for h, n in Counter(header).items() if n > 1]
                if missing:
                    problems.add(line, None, f"header lacks column(s): {', '.join(missing)}")
                for h in unknown:
                    problems.add(line, header.index(h) + 1,
                                 f"column {header.index(h) + 1}: unknown column {h!r} (comments go in `why`)")
                for h in dup:
                    problems.add(line, None, f"column {h!r} appears twice in the header")
                if problems.items:
                    return []
                continue
            if len(record) != len(header):
                problems.add(line, min(len(record), len(header)) + 1,
                             f"the row has {len(record)} fields, the header {len(header)} (broken quoting or a "
                             "stray comma?)")
                continue
            rows.append(SheetRow(line, {h: _cell_in(v) for h, v in zip(header, record)},
                                 {h: k + 1 for k, h in enumerate(header)}))
    except csv.Error as exc:
        where = _quote_problem(text, offsets[min(start - 1, len(offsets) - 1)], start)
        if where:
            problems.add(where[0], where[1], f"column {where[1]}: broken CSV quoting, {where[2]}")
        else:
            problems.add(start, None, f"broken CSV: {exc}")
        return []
    if header is None:
        problems.add(1, None, "the sheet is empty (no header row)")
    return rows


def _parse_jsonl(text: str, problems: _Problems) -> list[SheetRow]:
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.add(n, exc.colno, f"not valid JSON: {exc.msg}")
            continue
        if not isinstance(obj, dict):
            problems.add(n, 1, "a row must be a JSON object")
            continue
        missing = [c for c in COLUMNS if c not in obj]
        unknown = [k for k in obj if k not in COLUMNS]
        if missing or unknown:
            problems.add(n, None, "; ".join(filter(None, [
                f"missing field(s): {', '.join(missing)}" if missing else "",
                f"unknown field(s): {', '.join(map(str, unknown))} (comments go in `why`)" if unknown else ""])))
            continue
        values = {}
        for k, v in obj.items():
            if k == "edited_reasoning" and isinstance(v, list) and all(isinstance(x, str) for x in v):
                v = "\n".join(v)
            if v is None and k not in READ_ONLY:
                v = ""
            if not isinstance(v, str):
                problems.add(n, None, f"field {k!r} must be a string")
                continue
            values[k] = v
        if len(values) == len(COLUMNS):
            rows.append(SheetRow(n, values, None))
    return rows


def read_sheet(sheet_path: str | Path) -> list[SheetRow]:
    """Parse a CSV, xlsx or JSONL sheet; broken files are refused with located problems."""
    path = Path(sheet_path)
    if path.suffix.lower() == ".xlsx":
        from compiler.review.xlsx import parse_xlsx

        problems = _Problems(path)
        rows = parse_xlsx(path, COLUMNS, problems, SheetRow)
        problems.raise_if_any()
        return rows
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ReviewError(f"cannot read the review sheet: {exc.strerror}", path=str(path)) from None
    try:
        text = raw.decode("utf-8-sig")  # spreadsheets add a BOM
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ReviewError("the sheet is not UTF-8 text", path=str(path), line=line,
                          hint="save it as CSV UTF-8") from None
    problems = _Problems(path)
    is_jsonl = path.suffix.lower() in (".jsonl", ".json") or text.lstrip().startswith("{")
    rows = _parse_jsonl(text, problems) if is_jsonl else _parse_csv(path, text, problems)
    problems.raise_if_any()
    return rows

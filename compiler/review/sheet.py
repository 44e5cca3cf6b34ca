"""`kdc review`: human spot checks of a build.

An expert reviews a seeded 5-10 % sample of every node in a sheet (CSV, an xlsx workbook for
spreadsheet programs (compiler/review/xlsx.py), or JSONL): each row shows the question, reasoning and answer with the seed examples and the chunk
it came from, and takes a verdict (accept / reject / edit), edits and a reason. Applying the
sheet drops what was rejected, applies edits and records who/when/why; the next compile reads
reviews/verdicts.jsonl and tops the quota up.

A sheet passes through hands and spreadsheets, so applying it trusts nothing: every row is
checked (known id, untouched provenance via a sha256, a valid verdict) before anything is
written, and a bad sheet is refused with the line and column of each problem.
"""

from __future__ import annotations

import copy
import csv
import getpass
import hashlib
import io
import json
import math
import random
import shutil
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from compiler.io import journal
from compiler.review.calibration import calibrate, judge_scores
from compiler.chat import assistant_turn, user_turn
from compiler.io.fsutil import atomic_write, jsonl_text, read_jsonl
from compiler.errors import ReviewError, UsageError
from compiler.records import Leaf, Seed
from compiler.report.html import BuildView, load_build, node_path

COLUMNS = ("id", "node_id", "verdict", "why", "question", "reasoning", "answer", "edited_question",
           "edited_reasoning", "edited_answer", "context", "seed_examples", "seeds_shown", "source",
           "reviewer", "sha256")
# Shown to the reviewer, never applied: covered by the row's sha256.
READ_ONLY = ("id", "node_id", "question", "reasoning", "answer", "context", "seeds_shown", "seed_examples",
             "source")
FROM_BUILD = tuple(c for c in READ_ONLY if c != "seed_examples")  # re-derivable from the build alone
VERDICTS = ("accept", "reject", "edit")
REVIEW_REJECTED = "review-rejected"
MAX_PROBLEMS = 20


@dataclass(frozen=True)
class Verdict:
    """One line of reviews/verdicts.jsonl (docs/build-layout.md)."""

    id: str
    node_id: str
    verdict: str
    by: str
    at: str
    why: str
    edited: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ApplyResult:
    sheet: Path
    accepted: int = 0
    rejected: int = 0
    edited: int = 0
    unreviewed: int = 0
    already: int = 0  # rows whose verdict was applied before (the same sheet again)
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)  # node -> {reviewed, rejected, flagged}
    calibration: dict[str, Any] | None = None  # compiler/review/calibration.py, when the build was judged

    @property
    def flagged(self) -> list[str]:
        return sorted(n for n, r in self.nodes.items() if r.get("flagged"))


# ------------------------------------------------------------------------------------- verdicts


def verdicts_path(build_dir: str | Path) -> Path:
    return Path(build_dir) / "reviews" / "verdicts.jsonl"


def load_verdicts(build_dir: str | Path) -> dict[str, dict[str, Any]]:
    """id -> verdict line; the last line for an id wins (the contract compile relies on)."""
    return {str(v.get("id")): v for v in read_jsonl(verdicts_path(build_dir))}


def review_stats(verdicts: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per node: how many samples were reviewed, how many rejected, and the flag (most rejected)."""
    reviewed, rejected = Counter(), Counter()
    for v in verdicts.values():
        node = str(v.get("node_id"))
        reviewed[node] += 1
        rejected[node] += v.get("verdict") == "reject"
    return {n: {"reviewed": reviewed[n], "rejected": rejected[n], "flagged": rejected[n] * 2 > reviewed[n]}
            for n in sorted(reviewed)}


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


def training_seeds(view: BuildView, node_id: str) -> list[Seed] | None:
    """The leaf's seed examples minus those held out for eval (what `seeds_shown` indexes), if the
    qna.yaml the build came from is still there unchanged; None otherwise (never the wrong seeds)."""
    from compiler.io.yamlload import MAX_BYTES, YamlLoadError, loads  # the taxonomy is read only for this

    tax = view.manifest.get("taxonomy")
    root = tax.get("root") if isinstance(tax, dict) else None
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
    built_from = {(s.get("metadata") or {}).get("leaf_sha256") for s in view.train.get(node_id, [])} - {None}
    if not isinstance(content, dict) or (built_from and hashlib.sha256(raw).hexdigest() not in built_from):
        return None
    leaf = Leaf(node_id=node_id, file=str(qna), kind=str((view.nodes.get(node_id) or {}).get("kind") or ""),
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
        cfg = view.manifest.get("config")
        seed = cfg.get("seed", 0) if isinstance(cfg, dict) and isinstance(cfg.get("seed"), int) else 0
    path = Path(out) if out else view.root / "reviews" / f"sheet-seed{seed}.{fmt}"
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


# ---------------------------------------------------------------------------------------- apply


def _already_applied(v: dict[str, str], prior: dict[str, Any] | None, reviewer: str) -> bool:
    """This row's verdict is the one the verdict log already holds for the sample."""
    if not prior or v["verdict"].strip().lower() != prior.get("verdict"):
        return False
    if v["why"].strip() != (prior.get("why") or "") or (v["reviewer"].strip() or reviewer) != prior.get("by"):
        return False
    if prior.get("verdict") != "edit":
        return True
    done = prior.get("edited") or {}
    steps = [s.strip() for s in v["edited_reasoning"].split("\n") if s.strip()]
    return ((not v["edited_question"].strip() or v["edited_question"].strip() == done.get("question"))
            and (not v["edited_answer"].strip() or v["edited_answer"].strip() == done.get("answer"))
            and (not steps or steps == done.get("reasoning")))


def _check_rows(view: BuildView, rows: list[SheetRow], problems: _Problems, reviewer: str,
                at: str, already: list[str]) -> list[Verdict]:
    index = {str(s.get("id")): (node_id, s) for node_id, ss in view.train.items() for s in ss}
    gone = {str(r.get("id")) for rs in view.rejected.values() for r in rs if r.get("reason") == REVIEW_REJECTED}
    seen: dict[str, int] = {}
    seeds_cache: dict[str, list[Seed] | None] = {}
    recorded = load_verdicts(view.root)
    out = []
    for row in rows:
        v = row.values
        sid = v["id"].strip()
        if sid in seen:
            problems.add(row, "id", f"sample {sid} is already on line {seen[sid]}")
            continue
        seen[sid] = row.line
        if _already_applied(v, recorded.get(sid), reviewer):
            already.append(sid)  # the same sheet applied again: nothing to do for this row
            continue
        if sid not in index:
            problems.add(row, "id", f"sample {sid!r} was already rejected by an earlier review" if sid in gone
                         else f"unknown sample id {sid!r}: not in this build's train sets")
            continue
        node_id, sample = index[sid]
        if v["node_id"] != node_id:
            problems.add(row, "node_id", f"node_id {v['node_id']!r} is not the sample's node {node_id!r}")
            continue
        if node_id not in seeds_cache:
            seeds_cache[node_id] = training_seeds(view, node_id)
        expected = sheet_row(sample, seeds_cache[node_id])
        if digest(v) != v["sha256"].strip():
            changed = [c for c in READ_ONLY if v[c] != expected[c] and (c != "seed_examples" or expected[c])]
            if changed:
                problems.add(row, changed[0], "provenance was edited (read-only column); put corrections in "
                             "edited_question / edited_reasoning / edited_answer")
            else:
                problems.add(row, "sha256", "the integrity field (sha256) was altered")
            continue
        if any(v[c] != expected[c] for c in FROM_BUILD):
            problems.add(row, "id", "the sample changed in the build since this sheet was drawn; draw a new sheet")
            continue
        verdict = v["verdict"].strip().lower()
        if verdict not in ("",) + VERDICTS:
            problems.add(row, "verdict",
                         f"verdict {v['verdict']!r} is not accept, reject or edit (blank: not reviewed)")
            continue
        edits = {k: v[f"edited_{k}"].strip() for k in ("question", "reasoning", "answer")}
        if verdict != "edit" and any(edits.values()):
            first = next(k for k, e in edits.items() if e)
            problems.add(row, f"edited_{first}", f"edited_{first} is filled but the verdict is "
                         f"{verdict or 'blank'}; set the verdict to edit or clear it")
            continue
        if verdict == "edit" and not any(edits.values()):
            problems.add(row, "verdict", "verdict edit needs edited_question, edited_reasoning or edited_answer")
            continue
        who = (v["reviewer"].strip() or reviewer).strip()
        if "\n" in who or len(who) > 100:
            problems.add(row, "reviewer", "reviewer must be one short line")
            continue
        if not verdict:
            continue
        edited = None
        if verdict == "edit":
            rec = sample.get("record") or {}
            steps = [s.strip() for s in edits["reasoning"].split("\n") if s.strip()]
            edited = {"question": edits["question"] or _text(rec.get("question")),
                      "reasoning": steps or _steps(rec.get("reasoning")),
                      "answer": edits["answer"] or _text(rec.get("answer"))}
        out.append(Verdict(sid, node_id, verdict, who, at, v["why"].strip(), edited))
    return out


def _user_turn(rec: dict[str, Any]) -> str:
    return user_turn(rec["question"], rec.get("context"))


def _assistant_turn(rec: dict[str, Any]) -> str:
    return assistant_turn(_steps(rec["reasoning"]), rec["answer"])


def _replace(text: str, old: str, new: str) -> tuple[str, bool]:
    if not old or old not in text:
        return text, False
    k = text.rindex(old)
    return text[:k] + new + text[k + len(old):], True


def edit_messages(messages: list[dict[str, Any]], old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    """The chat messages after an edit of the record. A turn in compile's layout is rewritten in
    that layout; any other turn has the edited texts replaced where they stand."""
    old = {"question": "", "reasoning": [], "answer": "", "context": None, **old}
    new = {**old, **new}
    msgs = copy.deepcopy(messages)
    for m in msgs:
        content = str(m.get("content", ""))
        if m.get("role") == "user":
            if content == _user_turn(old):
                content = _user_turn(new)
            elif new["question"] != old["question"]:
                content, ok = _replace(content, str(old["question"]), str(new["question"]))
                content = content if ok else _user_turn(new)
        elif m.get("role") == "assistant":
            olds, news = _steps(old["reasoning"]), _steps(new["reasoning"])
            ok = content != _assistant_turn(old) and len(olds) == len(news)
            for a, b in zip(olds, news):
                if ok and a != b:
                    content, ok = _replace(content, a, b)
            if ok and new["answer"] != old["answer"]:
                content, ok = _replace(content, str(old["answer"]), str(new["answer"]))
            content = content if ok else _assistant_turn(new)  # compile's layout, or a piece not found
        m["content"] = content
    return msgs


def _hf_writer(view: BuildView, nodes: set[str]):
    """Rewrites hf/<node_id> copies of changed nodes; checked before anything is written."""
    targets = {n: view.root / "hf" / n for n in nodes if (view.root / "hf" / n).is_dir()}
    if not targets:
        return lambda node_id, samples: None
    try:
        import datasets
        from datasets.utils.logging import disable_progress_bar
    except ImportError:
        raise ReviewError("this build has Hugging Face copies (hf/) that must follow the review, but the "
                          "`datasets` package is not installed", hint="pip install 'kdc[compile]'") from None
    disable_progress_bar()

    def write(node_id: str, samples: list[dict[str, Any]]) -> None:
        target = targets.get(node_id)
        if target is None:
            return
        old = datasets.load_from_disk(str(target))
        feats = old.features
        as_text = {c for c, f in feats.items() if getattr(f, "dtype", None) == "string"}  # e.g. JSON metadata
        rows = [{c: json.dumps(s.get(c), ensure_ascii=False, sort_keys=True)
                 if c in as_text and not isinstance(s.get(c), (str, type(None))) else s.get(c) for c in feats}
                for s in samples]
        try:
            new = datasets.Dataset.from_list(rows, features=feats) if rows else old.select([])
        except (ValueError, TypeError, KeyError):  # a copy written with other columns: infer them
            new = datasets.Dataset.from_list(rows)
        tmp = Path(tempfile.mkdtemp(prefix=".hf-", dir=target.parent))
        new.save_to_disk(str(tmp / "ds"))
        trash = target.with_name(f".{target.name}.old")
        shutil.rmtree(trash, ignore_errors=True)
        target.rename(trash)
        (tmp / "ds").rename(target)
        shutil.rmtree(trash, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)

    return write


def apply_sheet(build_dir: str | Path, sheet_path: str | Path, reviewer: str | None = None,
                now: datetime | None = None) -> ApplyResult:
    """Apply a filled review sheet to the build: all of it, or (on any problem) nothing."""
    from compiler.io.outlock import hold

    if not Path(build_dir).is_dir():
        return _apply_sheet(build_dir, sheet_path, reviewer, now)  # load_build says what is wrong
    with hold(Path(build_dir), "review --apply"):
        journal.recover(Path(build_dir))  # an apply that crashed is undone first
        return _apply_sheet(build_dir, sheet_path, reviewer, now)


def _apply_sheet(build_dir: str | Path, sheet_path: str | Path, reviewer: str | None,
                 now: datetime | None) -> ApplyResult:
    view = load_build(build_dir)
    path = Path(sheet_path)
    rows = read_sheet(path)
    problems = _Problems(path)
    at = (now or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    already: list[str] = []
    verdicts = _check_rows(view, rows, problems, (reviewer or "").strip() or _user(), at, already)
    problems.raise_if_any()
    result = ApplyResult(path, unreviewed=len(rows) - len(verdicts) - len(already), already=len(already))
    if not verdicts:
        return result
    judged = judge_scores({**view.rejected, **view.train}) if _judged(view) else {}
    stats = review_stats({**load_verdicts(view.root), **{v.id: v.to_json() for v in verdicts}})
    mixes = _mix_files(view)
    write_hf = _hf_writer(view, {v.node_id for v in verdicts})

    vpath = verdicts_path(view.root)
    applied = view.root / "reviews" / "applied" / f"{at.replace(':', '')}-{path.name}"
    nodes = sorted({v.node_id for v in verdicts})
    journal.begin(view.root, [p.relative_to(view.root).as_posix() for p in (
        vpath, applied, view.root / "manifest.json", view.root / "README.md", view.root / "report.html",
        *(view.root / m for m in mixes), *(view.root / "hf" / n for n in nodes),
        *(node_path(view.root, n, f) for n in nodes for f in ("train.jsonl", "rejected.jsonl")))])
    try:
        _write_apply(view, path, verdicts, stats, mixes, write_hf, vpath, applied, result, judged)
    except Exception:
        journal.recover(view.root)  # all or nothing; a kill -9 is undone by the next apply
        raise
    journal.commit(view.root)
    result.nodes = stats
    return result


def _write_apply(view: BuildView, path: Path, verdicts: list[Verdict], stats: dict, mixes: list[str],
                 write_hf, vpath: Path, applied: Path, result: ApplyResult, judged: dict) -> None:
    """Every write of an apply (inside the journal)."""
    prior = vpath.read_text(encoding="utf-8") if vpath.is_file() else ""
    atomic_write(vpath, prior + ("\n" if prior and not prior.endswith("\n") else "")
                 + jsonl_text(v.to_json() for v in verdicts))
    by_id = {v.id: v for v in verdicts}
    edited: dict[str, tuple[dict, dict]] = {}
    for node_id in sorted({v.node_id for v in verdicts}):
        keep, moved = _apply_node(view.train[node_id], by_id, edited, result)
        if moved:
            view.rejected[node_id] = view.rejected.get(node_id, []) + moved
            atomic_write(node_path(view.root, node_id, "rejected.jsonl"), jsonl_text(view.rejected[node_id]))
        atomic_write(node_path(view.root, node_id, "train.jsonl"), jsonl_text(keep))
        write_hf(node_id, keep)
        view.train[node_id] = keep
    mix_rows = _apply_mixes(view.root, mixes, {v.id for v in verdicts if v.verdict == "reject"}, edited)
    _update_manifest(view, verdicts, stats, mix_rows)
    if judged:  # the judge set against the experts, on every sample both have seen
        result.calibration = view.manifest["review_calibration"] = calibrate(
            judged, {**load_verdicts(view.root), **{v.id: v.to_json() for v in verdicts}})
    atomic_write(view.root / "manifest.json", json.dumps(view.manifest, indent=2, ensure_ascii=False) + "\n")

    # keep a copy of the applied sheet, then refresh the card and the report
    atomic_write(applied, path.read_bytes())
    from compiler.report.card import render_card
    from compiler.report.html import render_report
    atomic_write(view.root / "README.md", render_card(view))
    atomic_write(view.root / "report.html", render_report(view))


def _apply_node(samples: list[dict[str, Any]], by_id: dict[str, Verdict], edited: dict[str, tuple[dict, dict]],
                result: ApplyResult) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(samples kept, rejection lines): rejected move out whole, edits applied, verdicts recorded."""
    keep, moved = [], []
    for s in samples:
        v = by_id.get(str(s.get("id")))
        if v is None:
            keep.append(s)
            continue
        s = copy.deepcopy(s)
        meta = s.setdefault("metadata", {})
        meta["review"] = {"verdict": v.verdict, "by": v.by, "at": v.at, "why": v.why}
        if v.verdict == "reject":
            # the same line compile writes for a review-rejected id (compiler/compile/build.py)
            moved.append({"id": s.get("id"), "node_id": v.node_id, "reason": REVIEW_REJECTED,
                          "detail": f"rejected in review by {v.by}: {v.why}".strip(),
                          "raw": json.dumps(s.get("record"), ensure_ascii=False), "metadata": meta})
            result.rejected += 1
            continue
        if v.verdict == "edit":
            old = dict(s.get("record") or {})
            s["record"] = {**old, **(v.edited or {})}
            s["messages"] = edit_messages(s.get("messages") or [], old, s["record"])
            edited[str(s.get("id"))] = (old, s["record"])
            result.edited += 1
        else:
            result.accepted += 1
        keep.append(s)
    return keep, moved


def _mix_files(view: BuildView) -> list[str]:
    """Every SFT mix file (the manifest's, mixes/**/*.jsonl with their sources), inside the build."""
    mixes = view.manifest.get("mixes") if isinstance(view.manifest.get("mixes"), dict) else {}
    paths = {str(m["path"]) for m in mixes.values() if isinstance(m, dict) and m.get("path")}
    paths |= {p.relative_to(view.root).as_posix() for p in (view.root / "mixes").rglob("*.jsonl")}
    root = view.root.resolve()
    for p in paths:
        if not (root / p).resolve().is_relative_to(root):
            raise ReviewError(f"manifest.json names a mix outside the build directory: {p!r}",
                              path=str(view.root / "manifest.json"))
    return sorted(paths)


def _apply_mixes(root: Path, paths: list[str], dropped: set[str],
                 edited: dict[str, tuple[dict, dict]]) -> dict[str, list[dict]]:
    """Drop rejected samples (synthetic rows and their replays) from the SFT mixes and carry edits
    into them, until the next compile rebuilds the mixes; returns the rewritten files' rows."""
    changed: dict[str, list[dict]] = {}
    for rel in paths:
        rows_in = read_jsonl(root / rel)
        rows_out = []
        for r in rows_in:
            md = r.get("metadata") if isinstance(r.get("metadata"), dict) else {}
            rid, ours = str(md.get("id")), md.get("source") != "seed"
            if ours and rid in dropped:
                continue
            if ours and rid in edited:
                r = {**r, "messages": edit_messages(r.get("messages") or [], *edited[rid])}
            rows_out.append(r)
        if rows_out != rows_in:
            atomic_write(root / rel, jsonl_text(rows_out))
            changed[rel] = rows_out
    return changed


def _update_manifest(view: BuildView, verdicts: list[Verdict], stats: dict[str, dict[str, Any]],
                     mix_rows: dict[str, list[dict]]) -> None:
    """Accepted counts, the review-rejected reason, review stats and flags, mix rows, totals."""
    manifest = view.manifest
    rejected = Counter(v.node_id for v in verdicts if v.verdict == "reject")
    nodes = manifest.setdefault("nodes", {})
    for node_id, entry in nodes.items():
        if not isinstance(entry, dict):
            continue
        if rejected[node_id]:
            entry["accepted"] = len(view.train[node_id])
            if isinstance(entry.get("target"), int):
                entry["shortfall"] = max(0, entry["target"] - entry["accepted"])
            reasons = entry.get("rejected") if isinstance(entry.get("rejected"), dict) else {}
            reasons[REVIEW_REJECTED] = reasons.get(REVIEW_REJECTED, 0) + rejected[node_id]
            entry["rejected"] = reasons
        entry["review"] = stats.get(node_id, {"reviewed": 0, "rejected": 0, "flagged": False})
    mixes = manifest.get("mixes") if isinstance(manifest.get("mixes"), dict) else {}
    for mix in mixes.values():
        rows = mix_rows.get(str(mix.get("path"))) if isinstance(mix, dict) else None
        if rows is not None:
            by = Counter(str((r.get("metadata") or {}).get("source")) for r in rows)
            mix["rows"] = len(rows)
            mix["by_source"] = dict(sorted(by.items()))
            if "shares" in mix:
                mix["shares"] = {k: round(v / len(rows), 4) for k, v in sorted(by.items())} if rows else {}
    totals = manifest.get("totals")
    if isinstance(totals, dict):
        entries = [e for e in nodes.values() if isinstance(e, dict)]
        for key in ("accepted", "shortfall"):
            totals[key] = sum(e.get(key, 0) for e in entries if isinstance(e.get(key, 0), int))
        totals["rejected"] = sum(sum(v for v in (e.get("rejected") or {}).values() if isinstance(v, int))
                                 for e in entries)


def _judged(view: BuildView) -> bool:
    judge = view.manifest.get("judge") if isinstance(view.manifest, dict) else None
    return isinstance(judge, dict) and bool(judge.get("model"))


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"

"""`kdc review --format xlsx`: a workbook with locked text provenance, a verdict drop-down and
wrapped cells, applied back with the CSV path's checks, located by sheet, row and column."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from openpyxl import load_workbook

from compiler.errors import ReviewError
from compiler.review.apply import apply_sheet
from compiler.review.sheet import COLUMNS, READ_ONLY, draw_sheet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_report import make_build  # noqa: E402
from test_review import NOW, fill, read_csv, snapshot, write_csv  # noqa: E402


@pytest.fixture
def build(tmp_path: Path) -> Path:
    return make_build(tmp_path / "build")


def rows_of(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    ws = load_workbook(path)["review"]
    values = list(ws.iter_rows(values_only=True))
    header = list(values[0])
    return header, [{h: ("" if v is None else v) for h, v in zip(header, r)} for r in values[1:]]


def edit_cells(path: Path, rows: list[dict[str, str]], columns: tuple[str, ...]) -> None:
    """What a reviewer does in a spreadsheet program: type into cells, save."""
    wb = load_workbook(path)
    ws = wb["review"]
    for r, row in enumerate(rows, 2):
        for k, name in enumerate(COLUMNS, 1):
            if name in columns:
                ws.cell(row=r, column=k).value = row[name] or None
    wb.save(path)


def test_workbook_locks_provenance_as_text_with_a_verdict_dropdown(build: Path) -> None:
    path = draw_sheet(build, seed=5, fmt="xlsx")
    assert path.name == "sheet-seed5.xlsx"
    csv_rows = read_csv(draw_sheet(build, seed=5, out=build / "reviews" / "same.csv"))
    header, rows = rows_of(path)
    assert tuple(header) == COLUMNS and len(rows) == len(csv_rows) >= 5
    assert rows == csv_rows  # the same rows as the CSV sheet, cell for cell
    wb = load_workbook(path)
    ws = wb["review"]
    assert ws.protection.sheet and not ws.protection.autoFilter  # protected, filtering allowed
    for k, name in enumerate(COLUMNS, 1):
        cell = ws.cell(row=2, column=k)
        assert cell.number_format == "@", name  # text, never a number or date
        assert cell.data_type == "s" if rows[0][name] else cell.value is None, name
        assert cell.protection.locked == (name in READ_ONLY or name == "sha256"), name
        assert cell.alignment.wrap_text
    (dv,) = ws.data_validations.dataValidation
    col = "ABCDEFGHIJKLMNOP"[COLUMNS.index("verdict")]
    assert dv.type == "list" and dv.formula1 == '"accept,reject,edit"' and str(dv.sqref) == f"{col}2:{col}{len(rows) + 1}"
    assert ws.auto_filter.ref.startswith("A1:") and ws.freeze_panes == "D2"
    assert "how to review" in wb.sheetnames


def test_formula_like_and_date_like_text_stays_text(tmp_path: Path) -> None:
    from compiler.review.xlsx import SHEET, xlsx_bytes

    row = {c: "" for c in COLUMNS}
    row.update(id="=HYPERLINK(\"http://x\")", question="3/4", answer="007", context="+1 555 0100",
               reasoning="12345678901234567890")
    path = tmp_path / "s.xlsx"
    path.write_bytes(xlsx_bytes([row], COLUMNS, ("accept", "reject", "edit")))
    ws = load_workbook(path)[SHEET]
    cells = {h: ws.cell(row=2, column=k) for k, h in enumerate(COLUMNS, 1)}
    assert all(cells[c].data_type == "s" for c in ("id", "question", "answer", "context", "reasoning"))
    assert [cells[c].value for c in ("id", "question", "answer", "context", "reasoning")] == [
        row["id"], "3/4", "007", "+1 555 0100", "12345678901234567890"]


def test_xlsx_round_trip_changes_the_build_as_the_csv_does(build: Path, tmp_path: Path) -> None:
    twin = tmp_path / "twin"
    __import__("shutil").copytree(build, twin)
    # the CSV path
    sheet = draw_sheet(twin, seed=5)
    rows = read_csv(sheet)
    ids = fill(rows)
    write_csv(sheet, rows)
    csv_res = apply_sheet(twin, sheet, reviewer="alice", now=NOW)
    # the workbook path: the same verdicts typed into cells
    book = draw_sheet(build, seed=5, fmt="xlsx")
    _, xrows = rows_of(book)
    assert fill(xrows) == ids
    edit_cells(book, xrows, ("verdict", "why", "edited_answer", "edited_reasoning", "reviewer"))
    res = apply_sheet(build, book, reviewer="alice", now=NOW)
    assert (res.accepted, res.edited, res.rejected, res.unreviewed) == (1, 1, 3, 1)
    assert (res.accepted, res.edited, res.rejected, res.unreviewed) == (
        csv_res.accepted, csv_res.edited, csv_res.rejected, csv_res.unreviewed)
    # the build changed exactly as with the CSV sheet (the archived sheet itself aside)
    same = lambda snap: {k: v for k, v in snap.items() if not k.startswith("reviews/") or k.endswith("verdicts.jsonl")}  # noqa: E731
    a, b = same(snapshot(build)), same(snapshot(twin))
    a.pop("report.html"), b.pop("report.html")  # it shows the build's folder name
    assert a == b and "nodes/knowledge/science/astronomy/solar_system/train.jsonl" in a
    log = [json.loads(x) for x in (build / "reviews" / "verdicts.jsonl").read_text().splitlines()]
    assert sorted(v["id"] for v in log if v["verdict"] == "reject") == sorted(ids["rej"])
    # the same workbook again: already applied, nothing changes
    snap = snapshot(build)
    again = apply_sheet(build, book, reviewer="alice")
    assert (again.already, again.accepted, again.rejected) == (5, 0, 0) and snapshot(build) == snap


def test_a_changed_read_only_cell_is_refused_with_its_sheet_row_and_column(build: Path) -> None:
    book = draw_sheet(build, seed=5, fmt="xlsx")
    _, rows = rows_of(book)
    fill(rows)
    rows[2]["answer"] = "3/4"  # what a spreadsheet program's auto-format or a slip does
    edit_cells(book, rows, ("verdict", "why", "answer"))
    snap = snapshot(build)
    with pytest.raises(ReviewError) as err:
        apply_sheet(build, book, reviewer="alice")
    assert snapshot(build) == snap  # refused: nothing changed
    col = COLUMNS.index("answer") + 1
    assert (err.value.path, err.value.line, err.value.column) == (str(book), 4, col)  # row 4: the third sample
    assert err.value.message.startswith(f"sheet 'review' cell {'ABCDEFGHIJKLMNOP'[col - 1]}4 (answer): provenance was edited")


def test_bad_workbooks_are_refused_with_locations(build: Path, tmp_path: Path) -> None:
    book = draw_sheet(build, seed=5, fmt="xlsx")
    wb = load_workbook(book)
    ws = wb["review"]
    ws.cell(row=3, column=COLUMNS.index("verdict") + 1).value = "maybe"
    ws.cell(row=5, column=len(COLUMNS) + 2).value = "stray note"
    wb.save(book)
    with pytest.raises(ReviewError) as err:  # the sheet's shape first, as with a CSV
        apply_sheet(build, book)
    assert (err.value.line, err.value.column) == (5, len(COLUMNS) + 2)
    assert err.value.message == "sheet 'review' cell R5: a value outside the header's columns"
    ws.cell(row=5, column=len(COLUMNS) + 2).value = None
    wb.save(book)
    with pytest.raises(ReviewError) as err:  # then every row's values
        apply_sheet(build, book)
    assert (err.value.line, err.value.column) == (3, COLUMNS.index("verdict") + 1)
    assert err.value.message.startswith("sheet 'review' cell C3 (verdict): ")
    bad = tmp_path / "broken.xlsx"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ReviewError, match="not a readable .xlsx workbook") as err:
        apply_sheet(build, bad)
    assert err.value.path == str(bad)
    wb = load_workbook(book)
    wb["review"].title = "Sheet1"
    wb.save(book)
    with pytest.raises(ReviewError, match="no sheet named 'review'"):
        apply_sheet(build, book)


def test_review_cli_draws_a_workbook(build: Path, capsys, monkeypatch) -> None:
    from compiler.cli import main

    monkeypatch.setattr(sys, "argv", ["kdc", "review", str(build), "--format", "xlsx", "--seed", "3"])
    with pytest.raises(SystemExit) as exc:
        main()
    out = capsys.readouterr().out
    assert exc.value.code == 0 and (build / "reviews" / "sheet-seed3.xlsx").is_file()
    assert f"wrote {build / 'reviews' / 'sheet-seed3.xlsx'}" in out

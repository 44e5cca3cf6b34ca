"""Review sheets as Excel workbooks (openpyxl): what a reviewer opens without a CSV import.

Why: a spreadsheet program rewrites a CSV on open and save ("3/4" becomes a date, leading zeros
and long numbers are lost), and kdc then rightly refuses the sheet because read-only cells
changed. In a workbook every cell is written as a string cell with the Text number format, so
nothing is converted; provenance columns are locked (the sheet is protected, without a password:
protection guards against slips, the row's sha256 against everything else); `verdict` has a
drop-down; long cells wrap. One sheet for all nodes with a filterable `node_id` column: an
expert filters to a node, and one sheet keeps one header, one drop-down and one order.

Reading gives the same rows as the CSV reader (sheet.SheetRow), so applying runs the very same
checks, located by sheet, row and column (cell C5).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SHEET = "review"
HELP = "how to review"
EDITABLE = ("verdict", "why", "edited_question", "edited_reasoning", "edited_answer", "reviewer")
WIDE = {"question": 50, "reasoning": 60, "answer": 50, "context": 70, "seed_examples": 50, "why": 30,
        "edited_question": 40, "edited_reasoning": 50, "edited_answer": 40, "source": 40}
MAX_CELL = 32_767  # Excel's limit on a cell's text
MAX_BYTES = 50_000_000  # a review workbook is a few MB at most: refuse a zip bomb unopened


def xlsx_bytes(rows: list[dict[str, str]], columns: tuple[str, ...], verdicts: tuple[str, ...]) -> bytes:
    """The workbook of a review sheet's rows (the CSV's columns, in order)."""
    import io

    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Font, PatternFill, Protection
    from openpyxl.utils import get_column_letter
    from openpyxl.worksheet.datavalidation import DataValidation

    from compiler.errors import ReviewError

    wb = Workbook()
    ws = wb.active
    ws.title = SHEET
    wrap = Alignment(wrap_text=True, vertical="top")
    free, grey = Protection(locked=False), PatternFill("solid", fgColor="EEEEEE")
    ws.append(list(columns))
    for k, name in enumerate(columns, 1):
        head = ws.cell(row=1, column=k)
        head.font = Font(bold=True)
        ws.column_dimensions[get_column_letter(k)].width = WIDE.get(name, 14)
    for r, row in enumerate(rows, 2):
        for k, name in enumerate(columns, 1):
            value = row.get(name, "")
            if len(value) > MAX_CELL:
                raise ReviewError(f"sample {row.get('id')}: its {name} is {len(value):,} characters, over a "
                                  f"spreadsheet cell's {MAX_CELL:,}", hint="draw this sheet as --format jsonl")
            cell = ws.cell(row=r, column=k)
            if value:
                try:
                    cell.value = value
                except ValueError:  # openpyxl's IllegalCharacterError: control characters XML cannot hold
                    raise ReviewError(f"sample {row.get('id')}: its {name} holds control characters a workbook "
                                      "cannot store", hint="draw this sheet as --format csv or jsonl") from None
                cell.data_type = "s"  # text, always: "=..." stays text, never a formula
            cell.number_format = "@"  # and what the reviewer types stays text too
            cell.alignment = wrap
            if name in EDITABLE:
                cell.protection = free
            else:
                cell.fill = grey
    last = max(len(rows) + 1, 2)
    dv = DataValidation(type="list", formula1='"' + ",".join(verdicts) + '"', allow_blank=True,
                        showErrorMessage=True, errorTitle="verdict",
                        error="Choose accept, reject or edit (or leave it blank).")
    col = get_column_letter(columns.index("verdict") + 1)
    dv.add(f"{col}2:{col}{last}")
    ws.add_data_validation(dv)
    ws.freeze_panes = "D2"  # id, node_id and verdict stay in view
    ws.auto_filter.ref = f"A1:{get_column_letter(len(columns))}{last}"
    ws.protection.sheet = True
    ws.protection.autoFilter = False  # filtering and sorting stay allowed on the protected sheet
    ws.protection.sort = False
    ws.protection.formatColumns = False
    ws.protection.formatRows = False
    info = wb.create_sheet(HELP)
    for line in ("Fill `verdict` (accept, reject or edit) on the review sheet; blank rows are not reviewed.",
                 "edit: put the corrected text in edited_question / edited_reasoning (one step a line) / "
                 "edited_answer; say why in `why`.",
                 "Grey columns are the sample's provenance: locked, and checked against the row's sha256.",
                 "Filter `node_id` to review one node at a time. Then run: kdc review BUILD --apply THIS_FILE"):
        info.append([line])
    info.column_dimensions["A"].width = 110
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def _text(v: Any) -> str:
    """A cell as the CSV reader would give it: strings as typed, numbers as written, empty as ''."""
    if v is None:
        return ""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v).replace("\r\n", "\n")


def parse_xlsx(path: Path, columns: tuple[str, ...], problems, row_type) -> list:
    """The rows of a review workbook as `row_type` (sheet.SheetRow) objects; problems are added to
    `problems` (sheet._Problems) with the sheet, row and column, as the CSV reader does."""
    from zipfile import BadZipFile

    from openpyxl import load_workbook
    from openpyxl.utils import get_column_letter

    try:
        if path.stat().st_size > MAX_BYTES:
            problems.add(1, None, f"the workbook is over {MAX_BYTES:,} bytes; a review sheet is far smaller")
            return []
        wb = load_workbook(path, read_only=True, data_only=True)
    except (OSError, BadZipFile, KeyError, ValueError) as exc:
        problems.add(1, None, f"not a readable .xlsx workbook ({type(exc).__name__}: {str(exc)[:200]})")
        return []
    try:
        if SHEET not in wb.sheetnames:
            problems.add(1, None, f"the workbook has no sheet named {SHEET!r} (it has: {', '.join(wb.sheetnames)})")
            return []
        ws = wb[SHEET]
        out = []
        header: list[str] | None = None
        for r, cells in enumerate(ws.iter_rows(values_only=True), 1):
            values = [_text(v) for v in cells]
            while values and values[-1] == "":
                values.pop()
            if not values:
                continue
            if header is None:
                header = [h.strip() for h in values]
                at = {h: k + 1 for k, h in enumerate(header)}
                bad = [f"header lacks column(s): {', '.join(c for c in columns if c not in header)}"
                       ] if any(c not in header for c in columns) else []
                for h in header:
                    if h not in columns:
                        bad.append(f"cell {get_column_letter(at[h])}{r}: unknown column {h!r} (comments go in `why`)")
                    elif header.count(h) > 1:
                        bad.append(f"column {h!r} appears twice in the header")
                for msg in dict.fromkeys(bad):
                    problems.add(r, None, f"sheet {SHEET!r}: {msg}")
                if bad:
                    return []
                continue
            if len(values) > len(header):
                k = next(i for i, v in enumerate(values) if i >= len(header) and v != "") + 1
                problems.add(r, k, f"sheet {SHEET!r} cell {get_column_letter(k)}{r}: a value outside the "
                                   "header's columns")
                continue
            values += [""] * (len(header) - len(values))
            out.append(row_type(r, dict(zip(header, values)), dict(at), SHEET))
        if header is None:
            problems.add(1, None, f"sheet {SHEET!r} is empty (no header row)")
        return out
    finally:
        wb.close()

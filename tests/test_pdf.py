"""PDF knowledge documents: text per page with pypdf, page numbers in chunk provenance, scanned
pages reported per page, and validate agreeing with compile on what is usable."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from compiler.errors import DocumentError
from compiler.taxonomy.documents import chunks_for, load_documents
from compiler.validate.docrefs import check_document
from pdf_fixtures import make_pdf
from teacher_server import TeacherServer
from test_documents import git

ROOT = Path(__file__).resolve().parent.parent

PAGE1 = ["Halley's Comet returns to the inner Solar System about every 76 years.",
         "Its nucleus is roughly fifteen kilometres long and darker than coal.",
         "The comet was last seen from Earth in the year 1986."]
PAGE3 = ["A comet's tail always points away from the Sun, pushed by the solar wind.",
         "The dust tail curves gently while the ion tail stays straight and blue.",
         "Edmond Halley predicted the return of the comet in the year 1705."]


def commit_repo(path: Path, files: dict[str, bytes]) -> str:
    path.mkdir(parents=True)
    for name, data in files.items():
        (path / name).write_bytes(data)
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    git(path, "-c", "commit.gpgsign=false", "commit", "-q", "-m", "docs")
    return git(path, "rev-parse", "HEAD")


@pytest.fixture
def pdf_repo(tmp_path) -> str:
    return commit_repo(tmp_path / "docs", {"comets.pdf": make_pdf([PAGE1, None, PAGE3])})


def test_pdf_text_comes_page_by_page_and_chunks_carry_their_page(pdf_repo, tmp_path, caplog):
    doc = {"repo": "docs", "commit": pdf_repo, "patterns": ["*.pdf"]}
    with caplog.at_level(logging.WARNING, logger="kdc"):
        (d,) = load_documents(doc, tmp_path, where="knowledge/comets/qna.yaml")
    assert d.text == " ".join(PAGE1) + "\n\n" + " ".join(PAGE3) + "\n"  # no PDF syntax, page 2 left out
    assert "obj" not in d.text and "Tj" not in d.text
    # the scanned page is reported by number, located at the leaf
    assert [r.getMessage() for r in caplog.records] == [
        "knowledge/comets/qna.yaml: comets.pdf: page 2 of 3 has no text layer (scanned images?): left out"]
    chunks = chunks_for(doc, tmp_path, chunk_words=20)
    assert [(c.page, c.page_end) for c in chunks] == [(1, 1)] * 3 + [(3, 3)] * 3  # a sentence a chunk
    for c in chunks:
        assert d.text[c.start:c.end] == c.text and c.file == "comets.pdf" and c.commit == pdf_repo
        assert c.text in " ".join(PAGE1 if c.page == 1 else PAGE3)
    # a larger size crosses the page break: the chunk says both pages
    (whole,) = chunks_for(doc, tmp_path, chunk_words=400)
    assert (whole.page, whole.page_end) == (1, 3) and whole.text == d.text.strip()


def test_validate_and_compile_agree_on_what_is_usable(tmp_path):
    files = {"good.md": b"# Good\n\nA fine document.\n",
             "binary.md": b"\x00\x01binary",
             "latin1.md": "caf\xe9\n".encode("latin-1"),
             "good.pdf": make_pdf([PAGE1]),
             "partly_scanned.pdf": make_pdf([PAGE1, None, None]),
             "scanned.pdf": make_pdf([None, None]),
             "broken.pdf": b"%PDF-1.4\nthis is not a PDF at all\n",
             "notes.txt": b"not a knowledge document\n"}
    commit = commit_repo(tmp_path / "docs", files)
    seen = {}
    for name in files:
        check = check_document("docs", commit, [name], tmp_path)
        issues = [(i.rule, i.severity) for i in check.issues]
        try:
            load_documents({"repo": "docs", "commit": commit, "patterns": [name]}, tmp_path, where="q.yaml")
            compiled = "ok"
        except DocumentError as exc:
            assert exc.path == "q.yaml"
            compiled = exc.message
            (msg,) = [i.message for i in check.issues]
            assert msg == compiled  # validate reports compile's very words
        seen[name] = (issues, compiled)
    assert seen["good.md"] == ([], "ok") and seen["good.pdf"] == ([], "ok")
    assert seen["partly_scanned.pdf"] == ([("document-pages-without-text", "")], "ok")
    assert check_document("docs", commit, ["partly_scanned.pdf"], tmp_path).issues[0].message == (
        "partly_scanned.pdf: pages 2, 3 of 3 have no text layer (scanned images?): left out")
    for name, words in (("binary.md", "is binary"), ("latin1.md", "not UTF-8"),
                        ("scanned.pdf", "none of its 2 page(s) has a text layer"), ("broken.pdf", "cannot be read")):
        issues, compiled = seen[name]
        assert issues == [("document-unusable", "error")] and words in compiled, name
    assert seen["notes.txt"][0] == [("document-unresolved", "")]  # neither reads a .txt file
    assert "no .md or .pdf document" in seen["notes.txt"][1]


def test_validate_cli_locates_pdf_problems_on_the_patterns_line(tmp_path):
    commit = commit_repo(tmp_path / "repos" / "docs", {"scan.pdf": make_pdf([None]),
                                                       "half.pdf": make_pdf([PAGE1, None])})
    (tmp_path / ".git").mkdir()  # the checkout the document repo lies in
    leaf = tmp_path / "tax" / "knowledge" / "comets"
    leaf.mkdir(parents=True)
    text = (ROOT / "taxonomy/knowledge/science/astronomy/solar_system/qna.yaml").read_text(encoding="utf-8")
    head = text[:text.index("document:\n")]
    (leaf / "qna.yaml").write_text(head + f"document:\n  repo: ../repos/docs\n  commit: {commit}\n  patterns:\n"
                                   "    - \"*.pdf\"\n", encoding="utf-8")
    (leaf / "attribution.txt").write_text("Title: comets\n", encoding="utf-8")
    line = head.count("\n") + 5  # the pattern list under `patterns:`
    r = subprocess.run([sys.executable, "-m", "compiler", "validate", str(tmp_path / "tax"), "--format", "json"],
                       capture_output=True, text=True, cwd=ROOT, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert "Traceback" not in r.stderr and r.returncode == 1, r.stderr
    report = json.loads(r.stdout)
    problems = [p for f in report["files"] for p in f["problems"] if p["rule"].startswith("document")]
    got = sorted((p["rule"], p["severity"], p["line"], p["message"]) for p in problems)
    assert got == [("document-pages-without-text", "warning", line,
                    "half.pdf: page 2 of 2 has no text layer (scanned images?): left out"),
                   ("document-unusable", "error", line,
                    "document scan.pdf: none of its 1 page(s) has a text layer (a scanned PDF?)")]


def test_docling_is_used_only_when_installed(pdf_repo, tmp_path):
    pytest.importorskip("pypdf")
    if __import__("importlib").util.find_spec("docling") is not None:
        pytest.skip("docling is installed here: this checks the message when it is not")
    with pytest.raises(DocumentError, match="pdf_converter is docling, but docling is not installed") as exc:
        load_documents({"repo": "docs", "commit": pdf_repo, "patterns": ["*.pdf"]}, tmp_path,
                       where="q.yaml", pdf_converter="docling")
    assert exc.value.path == "q.yaml" and "pdf_converter: pypdf" in exc.value.hint


def test_a_pdf_knowledge_leaf_compiles_into_rows_quoting_its_pages(tmp_path, monkeypatch, capsys):
    from compiler.cli import main

    commit = commit_repo(tmp_path / "repos" / "comets", {"comets.pdf": make_pdf([PAGE1, None, PAGE3])})
    (tmp_path / ".git").mkdir()  # the checkout the document repo lies in
    tax = tmp_path / "tax"
    leaf = tax / "knowledge" / "astronomy" / "comets"
    shutil.copytree(ROOT / "taxonomy/knowledge/science/astronomy/solar_system", leaf)
    text = (leaf / "qna.yaml").read_text(encoding="utf-8")
    (leaf / "qna.yaml").write_text(text[:text.index("document:\n")] + f"document:\n  repo: ../repos/comets\n"
                                   f"  commit: {commit}\n  patterns:\n    - \"*.pdf\"\n", encoding="utf-8")
    (tax / "kdc.yaml").write_text("chunk_words: 20\nper_chunk: 1\nseed: 3\naugment: {enabled: false}\n", encoding="utf-8")
    out = tmp_path / "out"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with TeacherServer(latency=0.0) as srv:
        monkeypatch.setattr(sys, "argv", ["kdc", "compile", str(tax), "--out", str(out), "--teacher",
                                          "openai/teacher-test", "--api-base", srv.url, "--no-judge",
                                          "--samples-per-node", "2"])
        with pytest.raises(SystemExit) as exc:
            main()
    _, err = capsys.readouterr()
    assert exc.value.code == 0, err
    assert "comets.pdf: page 2 of 3 has no text layer" in err
    m = json.loads((out / "manifest.json").read_text())
    node = m["nodes"]["knowledge/astronomy/comets"]
    rows = [json.loads(ln) for ln in (out / node["files"]["train"]).read_text().splitlines()]
    assert len(rows) == node["target"] == 6 and node["coverage"]["covered"] == 6  # one row a chunk
    sentences = {1: PAGE1, 3: PAGE3}
    pages = set()
    for row in rows:
        doc = row["metadata"]["document"]
        assert doc["file"] == "comets.pdf" and doc["commit"] == commit and doc["page"] == doc["page_end"]
        pages.add(doc["page"])
        assert row["record"]["answer"] in sentences[doc["page"]]  # the teacher quoted that page's sentence
        assert row["record"]["context"] in " ".join(sentences[doc["page"]])
        assert "Tj" not in json.dumps(row) and "endobj" not in json.dumps(row)
    assert pages == {1, 3}
    # a reviewer sees the page to open
    from compiler.review.sheet import draw_sheet

    sheet = draw_sheet(out, share=1.0, fmt="jsonl")
    sources = {json.loads(ln)["source"] for ln in sheet.read_text().splitlines()}
    assert {s.split("] ")[1].split(" ")[0] for s in sources} == {"p.1", "p.3"}

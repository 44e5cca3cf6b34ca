"""Knowledge documents read with real git at a commit, markdown to text, token chunks with spans."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from compiler.taxonomy.chunking import section_chunks
from compiler.taxonomy.documents import (Document, chunks_for, list_files, load_documents, markdown_blocks, markdown_to_text,
                                resolve_repo)
from compiler.errors import DocumentError

ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x.invalid", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@x.invalid", "GIT_CONFIG_NOSYSTEM": "1", "HOME": os.devnull}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], env=ENV, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path) -> tuple[Path, str]:
    r = tmp_path / "docs"
    (r / "guide").mkdir(parents=True)
    (r / "intro.md").write_text("# Intro\n\nThe **first** fact is [here](http://x).\n", encoding="utf-8")
    (r / "guide" / "deep.md").write_text("## Deep\n\n- one\n- two\n", encoding="utf-8")
    (r / "notes.txt").write_text("plain text notes\n", encoding="utf-8")
    (r / "blob.md").write_bytes(b"\x00\x01binary")
    os.symlink("/etc/passwd", r / "link.md")
    git(r, "init", "-q", "-b", "main")
    git(r, "add", "-A")
    git(r, "-c", "commit.gpgsign=false", "commit", "-q", "-m", "docs")
    return r, git(r, "rev-parse", "HEAD")


def test_patterns_match_committed_regular_files_only(repo, tmp_path):
    _, commit = repo
    r = resolve_repo("docs", tmp_path)  # kdc's private copy of the repository's objects
    assert list_files(r, commit, ["*.md"]) == ["blob.md", "guide/deep.md", "intro.md"]  # no symlink
    assert list_files(r, commit, ["guide/*.md", "*.txt"]) == ["guide/deep.md", "notes.txt"]
    for bad in (["../*.md"], ["/etc/passwd"], ["guide/../../x"]):
        with pytest.raises(DocumentError, match="escapes"):
            list_files(r, commit, bad)
    with pytest.raises(DocumentError, match="no file"):
        list_files(r, commit, ["*.pdf"])


def test_documents_come_from_the_commit_not_the_working_tree(repo, tmp_path):
    r, commit = repo
    (r / "intro.md").write_text("# Changed on disk\n", encoding="utf-8")  # uncommitted edit
    docs = load_documents({"repo": "docs", "commit": commit, "patterns": ["intro.md"]}, tmp_path)
    assert [d.text for d in docs] == ["Intro\n\nThe first fact is here.\n"]
    assert docs[0].commit == commit and docs[0].repo == "docs" and docs[0].file == "intro.md"


def test_bad_document_references_are_located_errors(repo, tmp_path):
    r, commit = repo
    where = "knowledge/x/qna.yaml"
    cases = [({"repo": "nope", "commit": commit, "patterns": ["*.md"]}, "not found"),
             ({"repo": "docs", "commit": "0" * 40, "patterns": ["*.md"]}, "not found"),
             ({"repo": "docs", "commit": "main", "patterns": ["*.md"]}, "not a commit sha"),
             ({"repo": "docs", "commit": commit, "patterns": ["blob.md"]}, "binary"),
             ({"repo": "https://example.invalid/docs.git", "commit": commit, "patterns": ["*.md"]}, "fetching is off")]
    for document, message in cases:
        with pytest.raises(DocumentError, match=message) as exc:
            load_documents(document, tmp_path, where=where)
        assert exc.value.path == where


def test_a_huge_document_is_refused_before_it_is_read(tmp_path):
    r = tmp_path / "big"
    r.mkdir()
    (r / "huge.md").write_bytes(b"word " * 1_100_000)  # 5.5 MB
    git(r, "init", "-q", "-b", "main")
    git(r, "add", "-A")
    git(r, "-c", "commit.gpgsign=false", "commit", "-q", "-m", "big")
    with pytest.raises(DocumentError, match="5,500,000 bytes, over 5,000,000") as exc:
        load_documents({"repo": "big", "commit": git(r, "rev-parse", "HEAD"), "patterns": ["*.md"]}, tmp_path,
                       where="knowledge/x/qna.yaml")
    assert exc.value.path == "knowledge/x/qna.yaml"


def test_url_repos_are_cloned_only_when_allowed(repo, tmp_path, monkeypatch):
    r, commit = repo
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    url = f"file://{r}"  # stands in for a remote: a maintainer's allow-list admits it
    allow = (f"file://{tmp_path}",)
    with pytest.raises(DocumentError, match="only https:// URLs"):
        resolve_repo(url, tmp_path, fetch=True)
    with pytest.raises(DocumentError, match="fetching is off"):
        resolve_repo(url, tmp_path, allow=allow)
    docs = load_documents({"repo": url, "commit": commit, "patterns": ["guide/*.md"]}, tmp_path, fetch=True,
                          allow=allow)
    assert docs[0].text == "Deep\n\n- one\n\n- two\n"
    assert str(resolve_repo(url, tmp_path, fetch=True, allow=allow)).startswith(str(tmp_path / "cache" / "kdc" / "repos"))


def test_markdown_to_text_drops_markup_keeps_structure():
    md = ("---\ntitle: x\n---\n# Title\n\nSome **bold**, `code` and [a link](http://x) text\nwrapped.\n\n"
          "1. first\n2. second\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```\nfenced code\n```\n\n"
          "<!-- hidden --><div>html</div>\n\n![alt text](img.png)\n")
    assert markdown_to_text(md) == ("Title\n\nSome bold, code and a link text wrapped.\n\n1. first\n\n2. second\n\n"
                                    "a | b\n\n1 | 2\n\nfenced code\n\nhtml\n\nalt text\n")


def _chunks(md: str, words: int):
    blocks = markdown_blocks(md)
    text = "\n\n".join(b.text for b in blocks).strip() + "\n"
    assert text == markdown_to_text(md)
    return text, section_chunks("repo", "c" * 40, "f.md", text, blocks, words)


def test_chunks_follow_sections_and_spans_point_into_the_text():
    para = lambda n, w: " ".join(f"{w}{i}." if i % 12 == 11 else f"{w}{i}" for i in range(n))  # noqa: E731
    md = (f"# Manual\n\nIntro {para(30, 'i')}\n\n## Install\n\n{para(150, 'a')}\n\n### Linux\n\n{para(60, 'l')}\n\n"
          f"## Tables\n\n| key | value |\n|---|---|\n" + "".join(f"| k{i} | v{i} v{i} |\n" for i in range(40))
          + f"\n## Code\n\n```\n" + "".join(f"line {i} of code\n" for i in range(10)) + "```\n\n"
          f"## Long\n\n{para(260, 'z')}\n")
    text, chunks = _chunks(md, 100)
    covered = "\n".join(text[c.start:c.end] for c in chunks)
    for c in chunks:
        assert text[c.start:c.end] == c.text and c.sha256 == hashlib.sha256(c.text.encode()).hexdigest()
        assert c.title == "Manual"
        assert not c.text.rstrip().endswith(("Install", "Linux", "Tables", "Code", "Long"))  # no dangling heading
    assert set(covered.split()) == set(text.split())  # every word of the document is in a chunk
    assert all(a.end <= b.start for a, b in zip(chunks, chunks[1:]))  # in order, no overlap
    # a heading starts its section's chunk and names it
    heads: dict[str, str] = {}
    for c in chunks:
        heads.setdefault(c.heading, c.text.split("\n", 1)[0])
    assert heads["Install"] == "Install" and heads["Tables"] == "Tables" and heads["Code"] == "Code"
    # the table is cut between rows only; the code block (under the size) stays whole
    table_rows = [ln for c in chunks for ln in c.text.splitlines() if ln.startswith(("k", "key |"))]
    assert len(table_rows) == 41 and all(ln.count(" | ") == 1 for ln in table_rows)
    code = [c for c in chunks if "line 0 of code" in c.text]
    assert len(code) == 1 and "line 9 of code" in code[0].text
    # the long section is cut between sentences, every piece within the size
    long = [c for c in chunks if "z0" in c.text or "z259" in c.text or c.heading == "Long"]
    assert len(long) >= 3 and all(len(c.text.split()) <= 100 for c in long)
    assert all(c.text.rstrip().endswith(".") or c.text.rstrip().endswith("z259") for c in long[:-1])
    # a larger size merges small sections: fewer chunks, headings still at chunk starts or inside
    _, big = _chunks(md, 400)
    assert len(big) < len(chunks) and big[0].heading in ("Manual", "")
    assert _chunks("short doc", 400)[1][0].text == "short doc"


def test_example_taxonomy_documents(example_taxonomy):
    chunks = chunks_for({"repo": "../build/doc-repos/solar_system", "commit": "ba82826c31b3073f80213f54e606f5b0d528898c",
                         "patterns": ["*.md"]}, example_taxonomy, chunk_words=400)
    assert len(chunks) >= 3 and all(c.file == "solar_system.md" for c in chunks)
    assert "Solar System" in chunks[0].text

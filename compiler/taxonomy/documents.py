"""Knowledge documents: read from a git repository at a commit with real git, turned from
markdown into text, cut into overlapping token chunks with provenance.

Why real git and a pinned commit: the sample's provenance (repo, commit, file, span, hash) must
point at bytes anyone can check out again. The git work is compiler/io/gitrepo.py (shared with
`kdc validate`): files come from the object store at the commit, never from the working tree, so
uncommitted edits and symlinks cannot leak in, and no pattern can name a path outside the
repository. This module stops at the first problem with a located DocumentError.

PDFs are read page by page (compiler/taxonomy/pdf.py): their chunks also carry the page numbers.
Only Markdown and PDF files are knowledge documents (DOC_KINDS), in compile and validate alike.

Tokens are whitespace-separated words (`\\S+`): tokenizer-free, deterministic and the same for
every teacher; a chunk of 400 such words is roughly 520 tokens of a BPE tokenizer. Chunks follow
the markdown structure (compiler/taxonomy/chunking.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from compiler.io import gitrepo
from compiler.errors import DocumentError
from compiler.io.gitrepo import RefError

if TYPE_CHECKING:  # loaded where chunks are made: `kdc validate` reads documents, never chunks them
    from compiler.records import Chunk
    from compiler.taxonomy.chunking import Block

MAX_DOC_BYTES = 5_000_000
DOC_KINDS = {".md": "markdown", ".markdown": "markdown", ".pdf": "pdf"}  # what validate and compile read
_TOKEN = re.compile(r"\S+")


@dataclass(frozen=True)
class Document:
    repo: str  # as written in qna.yaml
    commit: str  # full sha
    file: str  # path inside the repository
    text: str  # plain text (markdown converted)
    blocks: tuple[Block, ...] = ()  # its structure, for chunking


def _located(exc: RefError, where: str | None) -> DocumentError:
    return DocumentError(exc.message, path=where, hint=exc.hint or None)


def resolve_repo(repo: str, taxonomy_root: Path, *, fetch: bool = False, where: str | None = None,
                 allow: tuple[str, ...] = ()) -> Path:
    """The local git repository for a qna.yaml `document.repo`: a path (relative to the taxonomy
    root) or a URL, read from the shared clone cache and fetched only when fetching is allowed."""
    try:
        path = gitrepo.open_repo(repo, taxonomy_root, fetch_remote=fetch, allow=allow)
    except RefError as exc:
        raise _located(exc, where) from None
    if path is None:
        raise DocumentError(f"document repo {repo} is remote and fetching is off", path=where,
                            hint="pass --fetch (or `fetch_documents: true` in a trusted config), or clone it and use a local path")
    return path


def resolve_commit(repo_path: Path, commit: str, *, where: str | None = None, fetch: bool = False) -> str:
    """The full sha of `commit`, which must be a commit that exists in the repository."""
    try:
        return gitrepo.resolve_commit(repo_path, commit, fetch_missing=fetch)
    except RefError as exc:
        raise _located(exc, where) from None


def list_files(repo_path: Path, commit: str, patterns: list[str], *, where: str | None = None) -> list[str]:
    """Regular files at `commit` whose path matches a pattern (fnmatch on the full path, so
    `*.md` matches at any depth). Symlinks and submodules are skipped: they could point outside."""
    if not patterns or not all(isinstance(p, str) and p.strip() for p in patterns):
        raise DocumentError("document.patterns must list at least one file pattern", path=where,
                            hint='e.g. patterns: ["*.md"]')
    for p in patterns:
        if gitrepo.unsafe_pattern(p):
            raise DocumentError(f"document pattern {p!r} escapes the repository", path=where,
                                hint="patterns are paths inside the repository, e.g. docs/*.md")
    try:
        names = gitrepo.regular_files(repo_path, commit)
    except RefError as exc:
        raise _located(exc, where) from None
    out = sorted({n for p in patterns for n in gitrepo.matching(names, p)})
    if not out:
        raise DocumentError(f"no file at commit {commit[:12]} matches {patterns}", path=where,
                            hint="check document.patterns against `git ls-tree -r --name-only COMMIT`")
    return out


def read_bytes(repo_path: Path, commit: str, name: str, *, where: str | None = None) -> bytes:
    """A document's bytes at `commit`, refused when huge (asked before reading)."""
    try:
        size, data = gitrepo.read_blob(repo_path, commit, name, MAX_DOC_BYTES)
    except RefError as exc:
        raise _located(exc, where) from None
    if data is None:
        raise DocumentError(f"document {name} is {size:,} bytes, over {MAX_DOC_BYTES:,}", path=where,
                            hint="split it, or point the patterns at smaller files")
    return data


def decode_text(name: str, data: bytes, *, where: str | None = None) -> str:
    """A text document's bytes as text: refused when binary or not UTF-8."""
    if b"\0" in data:
        raise DocumentError(f"document {name} is binary", path=where, hint="use Markdown or PDF documents")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise DocumentError(f"document {name} is not UTF-8", path=where) from None


def read_file(repo_path: Path, commit: str, name: str, *, where: str | None = None) -> str:
    """A document's text at `commit`: refused when huge (asked before reading), binary or not UTF-8."""
    return decode_text(name, read_bytes(repo_path, commit, name, where=where), where=where)


def document_kind(name: str) -> str | None:
    """markdown, pdf, or None: not a knowledge document (validate and compile skip it alike)."""
    return DOC_KINDS.get(PurePosixPath(name).suffix.lower())


def pdf_blocks(name: str, data: bytes, *, converter: str = "pypdf", where: str | None = None
               ) -> tuple[list[Block], list[str]]:
    """A PDF's paragraphs as blocks carrying their page, and the warnings about pages without a
    text layer. A PDF with no text at all, or one that cannot be read, is a DocumentError."""
    from compiler.taxonomy import pdf
    from compiler.taxonomy.chunking import Block

    try:
        pages = pdf.read_pdf(data, converter)
    except pdf.PdfError as exc:
        raise DocumentError(f"document {name}: {exc.message}", path=where, hint=exc.hint or None) from None
    empty = pdf.empty_pages(pages)
    if len(empty) == len(pages):
        raise DocumentError(f"document {name}: none of its {len(pages)} page(s) has a text layer (a scanned PDF?)",
                            path=where, hint="run OCR on it (e.g. ocrmypdf) and commit the result, "
                            "or set pdf_converter: docling with its OCR models installed")
    blocks = [Block(para, "para", page=p.number) for p in pages if not p.empty for para in p.paragraphs]
    return blocks, ([pdf.describe_empty(name, empty, len(pages))] if empty else [])


def check_content(name: str, data: bytes, *, where: str | None = None) -> list[str]:
    """What compile will say about a document's bytes, for `kdc validate`: raises the same
    DocumentError compile would, returns its warnings (pages without text). Needs no markdown parser."""
    if document_kind(name) == "pdf":
        return pdf_blocks(name, data, where=where)[1]
    decode_text(name, data, where=where)
    return []


def markdown_to_text(md: str) -> str:
    """Plain text of a markdown document: markup dropped, block structure kept as blank lines,
    list items as "- ", table rows as "a | b". Parsed with markdown-it (CommonMark + tables)."""
    return "\n\n".join(b.text for b in markdown_blocks(md)).strip() + "\n"


def markdown_blocks(md: str) -> list[Block]:
    """The blocks of a markdown document with their kind (heading level, table row, code...):
    what markdown_to_text joins and what chunking.section_chunks cuts along."""
    from markdown_it import MarkdownIt

    from compiler.taxonomy.chunking import Block

    md = md.replace("\r\n", "\n").replace("\r", "\n")
    if md.startswith("---\n"):  # YAML front matter
        end = md.find("\n---", 4)
        if end != -1:
            md = md[end + 4:].lstrip("\n")
    tokens = MarkdownIt("commonmark").enable("table").parse(md)
    blocks: list[Block] = []
    lists: list[list] = []  # [marker kind, next number] per open list
    row: list[str] | None = None
    for i, tok in enumerate(tokens):
        if tok.type == "bullet_list_open":
            lists.append(["-", 0])
        elif tok.type == "ordered_list_open":
            lists.append(["1", int(tok.attrGet("start") or 1)])
        elif tok.type in ("bullet_list_close", "ordered_list_close"):
            lists.pop()
        elif tok.type == "tr_open":
            row = []
        elif tok.type == "tr_close":
            blocks.append(Block(" | ".join(row or []), "row"))
            row = None
        elif tok.type == "inline":
            text = _inline_text(tok).strip()
            if row is not None:
                row.append(text)
            elif text:
                lead, kind, level = "", "para", 0
                if i >= 1 and tokens[i - 1].type == "heading_open":
                    kind, level = "heading", int(tokens[i - 1].tag[1:] or 1)
                if lists and i >= 2 and tokens[i - 2].type == "list_item_open":
                    kind, n = lists[-1]
                    lead = "- " if kind == "-" else f"{n}. "
                    lists[-1][1] = n + 1
                    kind = "item"
                blocks.append(Block(lead + text, kind, level))
        elif tok.type in ("fence", "code_block"):
            blocks.append(Block(tok.content.rstrip("\n"), "code"))
        elif tok.type == "html_block":
            text = re.sub(r"<!--.*?-->|<[^>]+>", " ", tok.content, flags=re.S)
            text = re.sub(r"[ \t]+", " ", text).strip()
            if text:
                blocks.append(Block(text, "html"))
    return blocks


def _inline_text(tok) -> str:
    parts: list[str] = []
    for child in tok.children or []:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type == "softbreak":
            parts.append(" ")
        elif child.type == "hardbreak":
            parts.append("\n")
        elif child.type == "image":
            parts.append(child.content or "")
    return "".join(parts)


def load_documents(document: dict, taxonomy_root: Path, *, fetch: bool = False,
                   where: str | None = None, allow: tuple[str, ...] = (), pdf_converter: str = "pypdf"
                   ) -> list[Document]:
    """Every Markdown or PDF document a knowledge leaf names (its `document:` mapping), as plain
    text. Matched files of other kinds are skipped, as `kdc validate` skips them."""
    import logging

    log = logging.getLogger("kdc.documents")
    if not isinstance(document, dict):
        raise DocumentError("knowledge leaf has no `document:` mapping", path=where,
                            hint="add document: {repo, commit, patterns}")
    repo = document.get("repo")
    repo_path = resolve_repo(repo, taxonomy_root, fetch=fetch, where=where, allow=allow)
    commit = resolve_commit(repo_path, document.get("commit"), where=where, fetch=fetch)
    patterns = document.get("patterns")
    if isinstance(patterns, str):
        patterns = [patterns]
    names = [n for n in list_files(repo_path, commit, patterns or [], where=where) if document_kind(n)]
    if not names:
        raise DocumentError(f"the patterns match no .md or .pdf document at commit {commit[:12]}", path=where,
                            hint="knowledge documents must be Markdown (.md) or PDF (.pdf) files")
    docs = []
    for name in names:
        raw = read_bytes(repo_path, commit, name, where=where)
        if document_kind(name) == "pdf":
            blocks, warnings = pdf_blocks(name, raw, converter=pdf_converter, where=where)
            for w in warnings:
                log.warning("%s: %s", where or repo, w)
        else:
            blocks = markdown_blocks(decode_text(name, raw, where=where))
        text = "\n\n".join(b.text for b in blocks).strip() + "\n"
        docs.append(Document(gitrepo.redact(str(repo).strip()), commit, name, text, tuple(blocks)))  # provenance: no user:pass@
    return docs


def chunks_for(document: dict, taxonomy_root: Path, *, chunk_words: int, fetch: bool = False,
               where: str | None = None, allow: tuple[str, ...] = (), pdf_converter: str = "pypdf") -> list[Chunk]:
    """Every chunk of every matched document, in file order (plan.py permutes them)."""
    from compiler.taxonomy.chunking import section_chunks, text_blocks

    out: list[Chunk] = []
    for doc in load_documents(document, taxonomy_root, fetch=fetch, where=where, allow=allow,
                              pdf_converter=pdf_converter):
        blocks = list(doc.blocks) or text_blocks(doc.text)
        out.extend(section_chunks(doc.repo, doc.commit, doc.file, doc.text, blocks, chunk_words))
    if not out:
        raise DocumentError("the knowledge documents are empty", path=where)
    return out

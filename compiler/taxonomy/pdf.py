"""PDF knowledge documents: the text of each page, so chunks can say which page they quote.

Why pypdf: pure Python, no model to download, installs from the package index anywhere kdc
does (validate's CI included), and it reads the text layer a PDF already has. A scanned page has
no text layer; pypdf gives it no text and it is reported by page number (validate: a located
warning; compile: a log line), never filled with guesses. Docling (InstructLab's converter, with
OCR and layout models) is used instead when the config asks for it (`pdf_converter: docling`) and
the user has installed it with its models: kdc never downloads them (HF_HUB_OFFLINE is set).

Imports are lazy: a validate run that meets no PDF never imports pypdf.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass

CONVERTERS = ("pypdf", "docling")
_SPACE = re.compile(r"[ \t\u00a0]+")
_MIN_CHARS = 3  # fewer visible characters than this on a page: no usable text layer


class PdfError(Exception):
    """A PDF kdc cannot read (damaged, encrypted, or the converter is missing)."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


@dataclass(frozen=True)
class PdfPage:
    number: int  # 1-based, as a PDF viewer shows it
    paragraphs: tuple[str, ...]  # the page's text, one entry a paragraph (lines joined)

    @property
    def empty(self) -> bool:
        return sum(len(p.strip()) for p in self.paragraphs) < _MIN_CHARS


def read_pdf(data: bytes, converter: str = "pypdf") -> list[PdfPage]:
    """Every page of a PDF with its text. Raises PdfError for a file that cannot be read at all."""
    if converter not in CONVERTERS:
        raise PdfError(f"unknown pdf_converter {converter!r}", f"use one of {', '.join(CONVERTERS)}")
    if converter == "docling":
        return _docling_pages(data)
    try:
        from pypdf import PdfReader
    except ImportError:
        raise PdfError("reading PDF documents needs pypdf, which is not installed",
                       "pip install pypdf (it comes with kdc's base install)") from None
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise PdfError("the PDF is encrypted", "publish an unencrypted copy of the document")
        texts = [page.extract_text() or "" for page in reader.pages]
    except PdfError:
        raise
    except Exception as exc:  # untrusted bytes: pypdf raises many kinds of errors on damaged files
        raise PdfError(f"the PDF cannot be read ({type(exc).__name__}: {str(exc)[:200]})",
                       "check that the file opens in a PDF viewer, or convert it to Markdown") from None
    return [PdfPage(i + 1, paragraphs(t)) for i, t in enumerate(texts)]


def paragraphs(text: str) -> tuple[str, ...]:
    """A page's extracted text as paragraphs: lines joined with spaces (the PDF's line breaks are
    layout, not meaning), paragraphs split at blank lines; control characters dropped."""
    text = "".join(ch for ch in text.replace("\r\n", "\n").replace("\r", "\n")
                   if ch in "\n\t" or ch.isprintable())
    out = []
    for block in re.split(r"\n\s*\n", text):
        lines = [_SPACE.sub(" ", ln).strip() for ln in block.split("\n")]
        para = " ".join(ln for ln in lines if ln)
        if para:
            out.append(para)
    return tuple(out)


def empty_pages(pages: list[PdfPage]) -> list[int]:
    return [p.number for p in pages if p.empty]


def describe_empty(name: str, numbers: list[int], total: int) -> str:
    """The per-page message validate and compile both give for pages without a text layer."""
    which = ", ".join(map(str, numbers[:20])) + (f" and {len(numbers) - 20} more" if len(numbers) > 20 else "")
    pages = f"page {which} of {total} has" if len(numbers) == 1 else f"pages {which} of {total} have"
    return f"{name}: {pages} no text layer (scanned images?): left out"


def _docling_pages(data: bytes) -> list[PdfPage]:
    """Docling's conversion, page by page (its OCR reads scanned pages). Models must be installed."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # use installed models, never download at run time
    try:
        from docling.datamodel.base_models import DocumentStream
        from docling.document_converter import DocumentConverter
    except ImportError:
        raise PdfError("pdf_converter is docling, but docling is not installed",
                       "pip install docling and download its models, or use pdf_converter: pypdf") from None
    try:
        result = DocumentConverter().convert(DocumentStream(name="document.pdf", stream=io.BytesIO(data)))
        doc = result.document
        by_page: dict[int, list[str]] = {n: [] for n in range(1, doc.num_pages() + 1)}
        for item, _level in doc.iterate_items():  # text items in reading order, each with its page
            text, prov = getattr(item, "text", ""), getattr(item, "prov", None)
            if isinstance(text, str) and text.strip() and prov:
                by_page.setdefault(int(prov[0].page_no), []).append(text)
        pages = [PdfPage(n, paragraphs("\n\n".join(by_page[n]))) for n in sorted(by_page)]
    except Exception as exc:
        raise PdfError(f"docling cannot convert the PDF ({type(exc).__name__}: {str(exc)[:200]})",
                       "check docling's models are installed, or use pdf_converter: pypdf") from None
    return pages

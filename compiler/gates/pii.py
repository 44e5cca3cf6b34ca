"""Personal data in generated text: e-mail addresses, phone numbers, card numbers, IBANs and
national id numbers.

Patterns alone flag every long number, so the formats that carry a check digit are confirmed
by it (Luhn for cards and Canadian SINs, mod-97 for IBANs and French NIRs, mod-23 for Spanish
DNI/NIE); the rest need the separators people actually write.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

KINDS = ("email", "card", "iban", "national_id", "phone")
PLACEHOLDER = {"email": "[EMAIL]", "phone": "[PHONE]", "card": "[CARD]", "iban": "[IBAN]",
               "national_id": "[NATIONAL_ID]"}


@dataclass(frozen=True)
class Finding:
    kind: str  # one of KINDS
    label: str  # the format, e.g. "us-ssn", "visa-like card", "intl phone"
    start: int
    end: int
    text: str


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


# Lengths of IBANs by country (ISO 13616 registry, the common ones); others: 15..34.
IBAN_LENGTHS = {"AD": 24, "AE": 23, "AT": 20, "BE": 16, "BG": 22, "CH": 21, "CY": 28, "CZ": 24, "DE": 22,
                "DK": 18, "EE": 20, "ES": 24, "FI": 18, "FR": 27, "GB": 22, "GR": 27, "HR": 21, "HU": 28,
                "IE": 22, "IS": 26, "IT": 27, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MT": 31,
                "NL": 18, "NO": 15, "PL": 28, "PT": 25, "RO": 24, "SA": 24, "SE": 24, "SI": 19, "SK": 24,
                "SM": 27, "TR": 26}


def iban_ok(iban: str) -> bool:
    iban = iban.replace(" ", "").upper()
    want = IBAN_LENGTHS.get(iban[:2])
    if (want and len(iban) != want) or not 15 <= len(iban) <= 34:
        return False
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _dni_ok(m: re.Match) -> bool:
    s = re.sub(r"[\s-]", "", m.group(0)).upper()
    num = s[:-1]
    if num[0] in "XYZ":  # NIE: X/Y/Z stand for 0/1/2
        num = str("XYZ".index(num[0])) + num[1:]
    return "TRWAGMYFPDXBNJZSQVHLCKE"[int(num) % 23] == s[-1]


def _nir_ok(m: re.Match) -> bool:
    s = re.sub(r"\s", "", m.group(0)).upper()
    body, key = s[:13], int(s[13:])
    body = body.replace("2A", "19").replace("2B", "18")
    return 97 - int(body) % 97 == key


def _digits(m: re.Match) -> str:
    return re.sub(r"\D", "", m.group(0))


def _card_ok(m: re.Match) -> bool:
    """Luhn-valid, not one repeated digit, and written as cards are: unbroken or in groups of 3-6."""
    groups = re.split(r"[ -]", m.group(0))
    if len(groups) > 1 and not all(3 <= len(g) <= 6 for g in groups):
        return False
    digits = "".join(groups)
    return luhn_ok(digits) and len(set(digits)) > 1


_DATE = re.compile(r"\d{1,4}[/.-]\d{1,2}[/.-]\d{1,4}")


def _national_phone_ok(m: re.Match) -> bool:
    text = m.group(0)
    return 10 <= len(_digits(m)) <= 11 and re.search(r"[ /.-]", text) is not None and not _DATE.match(text)


# (kind, label, pattern, check). Order matters: earlier matches win overlapping spans.
_RULES: list[tuple[str, str, re.Pattern, object]] = [
    ("email", "email", re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
     None),
    ("iban", "iban", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"),
     lambda m: iban_ok(m.group(0))),
    ("card", "card", re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"),
     _card_ok),
    ("national_id", "us-ssn", re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b"), None),
    ("national_id", "uk-nino",
     re.compile(r"\b(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"), None),
    ("national_id", "es-dni", re.compile(r"\b[XYZ]?\d{7,8}-?[A-Z]\b"), _dni_ok),
    ("national_id", "fr-nir", re.compile(r"\b[12] ?\d{2} ?(?:0[1-9]|1[0-2]) ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?\d{2}\b"),
     _nir_ok),
    ("national_id", "ca-sin", re.compile(r"\b\d{3}[ -]\d{3}[ -]\d{3}\b"), lambda m: luhn_ok(_digits(m))),
    ("national_id", "it-cf", re.compile(r"\b[A-Z]{6}\d{2}[A-EHLMPR-T]\d{2}[A-Z]\d{3}[A-Z]\b"), None),
    ("phone", "intl phone", re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}\b"),
     lambda m: 8 <= len(_digits(m)) <= 15),
    ("phone", "us phone", re.compile(r"(?<!\w)(?:\(\d{3}\) ?|\b\d{3}[.-])\d{3}[.-]\d{4}\b"), None),
    ("phone", "national phone", re.compile(r"\b0\d{1,4}(?:[ /.-]\d{2,8}){1,4}\b"),
     _national_phone_ok),
]


# Every rule but e-mail matches a run of 6+ characters of digits and separators (cards, phones,
# IBANs, SSNs, DNIs, NIRs, SINs, NINOs) or six letters then two digits (Italian codice fiscale).
_CANDIDATE = re.compile(r"[0-9][0-9 ./()+-]{4,}[0-9]|[A-Z]{6}[0-9]{2}")
_MARGIN = 48  # longer than the longest spaced-out number a rule matches (an IBAN in groups of 4)


def _windows(text: str) -> list[tuple[int, int]]:
    """Spans of text around candidate numbers, widened to whitespace and merged: the dozen rule
    regexes run on these few spans instead of the whole text (a Python regex costs ~25 us per
    1,000 characters; ordinary numbers such as years and amounts open no window)."""
    spans: list[tuple[int, int]] = []
    n = len(text)
    for m in _CANDIDATE.finditer(text):
        s, e = max(0, m.start() - _MARGIN), min(n, m.end() + _MARGIN)
        while s > 0 and not text[s - 1].isspace():
            s -= 1
        while e < n and not text[e].isspace():
            e += 1
        if spans and s <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(e, spans[-1][1]))
        else:
            spans.append((s, e))
    return spans


def find_pii(text: str, kinds: tuple[str, ...] | frozenset[str] = KINDS) -> list[Finding]:
    """Non-overlapping findings in text order (the first rule to claim a span wins)."""
    found: list[Finding] = []
    taken: list[tuple[int, int]] = []
    if not text:
        return found
    windows = _windows(text)
    for kind, label, pattern, check in _RULES:
        if kind not in kinds:
            continue
        if kind == "email":
            spans = [(0, len(text))] if "@" in text else []
        else:
            spans = windows
        for ws, we in spans:
            for m in pattern.finditer(text, ws, we):
                if check is not None and not check(m):  # type: ignore[operator]
                    continue
                s, e = m.span()
                if any(s < te and ts < e for ts, te in taken):
                    continue
                taken.append((s, e))
                found.append(Finding(kind, label, s, e, m.group(0)))
    return sorted(found, key=lambda f: f.start)


def redact(text: str, findings: list[Finding]) -> str:
    """Replace each finding with its typed placeholder, e.g. `[EMAIL]`."""
    out, pos = [], 0
    for f in sorted(findings, key=lambda f: f.start):
        out.append(text[pos:f.start])
        out.append(PLACEHOLDER[f.kind])
        pos = f.end
    out.append(text[pos:])
    return "".join(out)


def scrub(text: str, kinds: tuple[str, ...] | frozenset[str] = KINDS) -> tuple[str, list[Finding]]:
    found = find_pii(text, kinds)
    return (redact(text, found) if found else text), found

"""PII detection: every kind is found in the forms people write, check digits reject look-alikes,
ordinary numbers (dates, versions, amounts) are left alone, and redaction uses typed placeholders."""

from __future__ import annotations

from pathlib import Path

import pytest

from compiler.gates.pii import KINDS, PLACEHOLDER, find_pii, iban_ok, luhn_ok, redact, scrub

FOUND = [
    ("email", "Write to jane.doe+news@corp.example.org today."),
    ("email", "contact: ops@mail.co.uk"),
    ("phone", "Call +44 20 7946 0958 after lunch."),
    ("phone", "Call +1 (415) 555-0132."),
    ("phone", "Call (415) 555-0132."),
    ("phone", "Call 415-555-0132."),
    ("phone", "Call 020 7946 0958."),
    ("phone", "Mobile 07700 900123."),
    ("phone", "Paris 01 23 45 67 89."),
    ("phone", "Berlin 030/12345678."),
    ("card", "Visa 4111 1111 1111 1111 expires soon."),
    ("card", "Card 4111-1111-1111-1111."),
    ("card", "Card 5500005555555559."),
    ("card", "Amex 3782 822463 10005."),
    ("iban", "IBAN GB82 WEST 1234 5698 7654 32 for the refund."),
    ("iban", "IBAN DE89370400440532013000."),
    ("iban", "IBAN FR1420041010050500013M02606."),
    ("national_id", "SSN 123-45-6789."),
    ("national_id", "NINO AB 12 34 56 C."),
    ("national_id", "NINO AB123456C."),
    ("national_id", "DNI 12345678Z."),
    ("national_id", "NIE X1234567L."),
    ("national_id", "NIR 1 85 05 78 006 084 91."),
    ("national_id", "SIN 046 454 286."),
    ("national_id", "Codice fiscale RSSMRA85T10A562S."),
]

NOT_PII = [
    "Ticket volume rose 12 percent on 15 March 2024.",
    "Released 2024-03-15 as version 1.2.3; pi is 3.14159.",
    "Meet at 10:30 on 01/18/2024 10:54 in room 214.",
    "A train travels 60 km in 2 hours at 30 km/h; the answer is 1999.",
    "Card 4111 1111 1111 1112 fails the Luhn check.",  # one digit off
    "IBAN GB82 WEST 1234 5698 7654 33 has a bad check.",
    "DNI 12345678A has the wrong letter.",
    "SIN 046 454 287 fails Luhn.",
    "NIR 1 85 05 78 006 084 90 has the wrong key.",
    "SSN 000-12-3456 and 666-12-3456 are never issued.",
    "Order 123439034-20241024 shipped; file IBM-20241011T123439034.md.",
    "0000 0000 0000 0000 is a placeholder.",
    "The product code is AB12 and the ratio 3:2.",
]


@pytest.mark.parametrize("kind,text", FOUND)
def test_each_kind_is_found(kind, text):
    found = find_pii(text)
    assert [f.kind for f in found] == [kind], found
    f = found[0]
    assert text[f.start:f.end] == f.text
    assert f.text.strip(" .,") == f.text  # the span is the value, not its surroundings


@pytest.mark.parametrize("text", NOT_PII)
def test_ordinary_numbers_and_bad_check_digits_are_not_pii(text):
    assert find_pii(text) == []


def test_check_digit_helpers():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert luhn_ok("046454286") and not luhn_ok("046454287")
    assert iban_ok("GB82 WEST 1234 5698 7654 32") and not iban_ok("GB82 WEST 1234 5698 7654 33")
    assert not iban_ok("DE8937040044053201300")  # one character short for DE


def test_redact_uses_typed_placeholders_and_keeps_the_rest():
    text = "Mail jane@corp.example.org, call +44 20 7946 0958, card 4111 1111 1111 1111, SSN 123-45-6789."
    clean, found = scrub(text)
    assert clean == "Mail [EMAIL], call [PHONE], card [CARD], SSN [NATIONAL_ID]."
    assert sorted(f.kind for f in found) == ["card", "email", "national_id", "phone"]
    assert redact(text, []) == text
    assert set(PLACEHOLDER) == set(KINDS)


def test_kinds_filter():
    text = "Mail jane@corp.example.org or call 415-555-0132."
    assert [f.kind for f in find_pii(text, ("phone",))] == ["phone"]
    assert scrub(text, ("email",))[0] == "Mail [EMAIL] or call 415-555-0132."


def test_numbers_far_apart_in_long_text_are_all_found():
    # The scan runs on windows around digit pairs: numbers at both ends of a long text, and a
    # number right at the start and end of the string, must still be found.
    filler = "word " * 400
    text = "123-45-6789 " + filler + "call 020 7946 0958 " + filler + "4111111111111111"
    assert [f.kind for f in find_pii(text)] == ["national_id", "phone", "card"]


def test_shipped_example_taxonomy_and_documents_have_no_findings(repo_root: Path):
    # Real expert-written content: a false positive here would redact or drop good samples.
    files = sorted((repo_root / "taxonomy").rglob("qna.yaml")) + sorted((repo_root / "documents").rglob("*.md"))
    assert len(files) >= 6
    for f in files:
        assert find_pii(f.read_text(encoding="utf-8")) == [], f

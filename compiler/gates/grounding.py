"""Grounding gate's score: how much of an answer its context (or question) supports, lexically."""

from __future__ import annotations

from compiler.gates.diversity import words

_STOP = frozenset("""a an the and or but if then than so of to in on at by for from with without as into onto
about over under between through during before after above below up down out off is are was were be
been being am do does did done has have had having it its it's this that these those there here
their them they he she him her his hers we us our you your i me my mine not no yes can could should
would will shall may might must also just only very more most less least such what which who whom
whose when where why how all any both each few other some own same too s t don doesn didn isn aren
wasn weren one two because while which per via etc""".split())


def _stem(w: str) -> str:
    """A light suffix stripper (write/writes/writing -> writ): enough for lexical support."""
    if len(w) <= 3:
        return w
    for suffix, repl in (("ies", "y"), ("sses", "ss"), ("ing", ""), ("edly", ""), ("ed", ""), ("ly", ""),
                         ("es", ""), ("s", "")):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            w = w[: len(w) - len(suffix)] + repl
            break
    return w[:-1] if w.endswith("e") and len(w) > 3 else w


def support_score(answer: str, context: str, question: str = "") -> float:
    """Share of the answer's content words (stemmed; numbers count) found in the context or the
    question. Lexical, so it is fast and explainable; the judge covers paraphrase."""
    content = [_stem(w) for w in words(answer) if w not in _STOP]
    if not content:
        return 1.0
    source = {_stem(w) for w in words(context)} | {_stem(w) for w in words(question)}
    return sum(1 for w in content if w in source) / len(content)

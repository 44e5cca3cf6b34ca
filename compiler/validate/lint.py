"""yamllint, in-process, with the reference's configuration.

InstructLab's reference pipes each file into a `yamllint` subprocess (~60 ms); calling the
linter directly gives the same problems for ~5 ms. Errors are fatal, warnings are reported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

REFERENCE_CONFIG = "{extends: relaxed, rules: {line-length: disable}}"
_DISABLE_FILE = re.compile(r"^#\s*yamllint disable-file\s*$")  # as yamllint.linter._run

# rule -> what to do about it (yamllint's own descriptions say what is wrong)
HINTS = {
    "trailing-spaces": "delete the spaces or tabs at the end of the line",
    "new-line-at-end-of-file": "end the file with a newline",
    "new-lines": "use Unix line endings (\\n)",
    "key-duplicates": "remove or rename one of the two keys; YAML keeps only the last",
    "anchors": "define the anchor (&name) before using the alias (*name)",
    "indentation": "indent with spaces, the same amount at each level",
    "empty-lines": "remove the extra blank lines",
    "hyphens": "put exactly one space after '-'",
    "colons": "put no space before ':' and one space after it",
    "commas": "put no space before ',' and one space after it",
    "braces": "use at most one space inside { }",
    "brackets": "use at most one space inside [ ]",
    "syntax": "fix the YAML syntax at this point",
}


@dataclass(frozen=True)
class LintIssue:
    line: int
    column: int
    level: str  # "error" | "warning"
    rule: str  # yamllint rule id, "syntax" for a syntax error
    message: str
    hint: str


@lru_cache(maxsize=8)
def _config(spec: str):
    from yamllint.config import YamlLintConfig

    return YamlLintConfig(spec)


def lint(text: str, config: str = REFERENCE_CONFIG, *, parsed: bool = False) -> list[LintIssue]:
    """yamllint's problems for a document, as the reference's `yamllint -f parsable -` reports them.

    parsed=True: the caller has already parsed `text` as PyYAML does (compiler.io.yamlload), so
    yamllint's own syntax pass, a third of its time, could only find nothing: it is skipped."""
    from yamllint import linter, parser

    conf = _config(config)
    if parsed:
        first_line = next(parser.line_generator(text)).content
        if _DISABLE_FILE.match(first_line):
            return []
        problems = linter.get_cosmetic_problems(text, conf, "")
    else:
        problems = linter.run(text, conf, "")
    out = []
    for p in problems:
        rule = p.rule or "syntax"
        desc = p.desc
        if rule == "syntax":
            desc = desc.removesuffix(" (syntax)")
        out.append(LintIssue(p.line, p.column, p.level or "error", rule, desc, HINTS.get(rule, "")))
    return out

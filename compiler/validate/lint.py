"""yamllint, in-process, with the reference's configuration.

InstructLab's reference pipes each file into a `yamllint` subprocess (~60 ms); calling the
linter directly gives the same problems for ~5 ms. Errors are fatal, warnings are reported.
"""

from __future__ import annotations

import os
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


class _Rules:
    """What yamllint.linter reads from a YamlLintConfig: the resolved rules (no ignore patterns)."""

    def __init__(self, rules: dict) -> None:
        self.rules = rules

    def enabled_rules(self, filepath):
        import yamllint.rules

        return [yamllint.rules.get(rule_id) for rule_id, conf in self.rules.items() if conf is not False]

    def is_file_ignored(self, filepath) -> bool:
        return False


@lru_cache(maxsize=8)
def _config(spec: str):
    """yamllint's configuration for `spec`. YamlLintConfig imports pathspec and parses the presets
    with the pure-Python YAML loader, a fifth of a one-file validate; a spec made of presets and
    rules without ignore patterns (the reference's) is resolved here instead, step for step as
    YamlLintConfig does it (tests/test_validate.py compares the two). Anything else: YamlLintConfig."""
    rules = _resolve(spec)
    if rules is not None:
        return _Rules(rules)
    from yamllint.config import YamlLintConfig

    return YamlLintConfig(spec)


def _resolve(content: str) -> dict | None:
    """YamlLintConfig(content).rules, or None where it would need more than presets and rules."""
    import yaml
    import yamllint

    conf = yaml.load(content, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    if not isinstance(conf, dict) or set(conf) - {"extends", "rules", "yaml-files"}:
        return None
    rules = conf.get("rules", {})
    if not isinstance(rules, dict):
        return None
    rules = {k: {} if v == "enable" else False if v == "disable" else v for k, v in rules.items()}
    if "extends" in conf:
        name = conf["extends"]
        preset = os.path.join(os.path.dirname(os.path.realpath(yamllint.__file__)), "conf", f"{name}.yaml")
        if not isinstance(name, str) or "/" in name or not os.path.isfile(preset):
            return None
        with open(preset, encoding="utf-8") as fh:
            base = _resolve(fh.read())
        if base is None:
            return None
        for rule, rule_conf in rules.items():  # YamlLintConfig.extend
            if isinstance(rule_conf, dict) and rule in base and base[rule] is not False:
                base[rule].update(rule_conf)
            else:
                base[rule] = rule_conf
        rules = base
    for rule, rule_conf in rules.items():
        rules[rule] = _validated(rule, rule_conf)
        if rules[rule] is None:
            return None
    return rules


def _validated(rule_id: str, conf):
    """yamllint.config.validate_rule_conf for a conf without ignore patterns; None where that
    function would raise (YamlLintConfig then reports the error) or need pathspec."""
    import yamllint.rules

    if conf is False:
        return False
    try:
        rule = yamllint.rules.get(rule_id)
    except Exception:
        return None
    if not isinstance(conf, dict) or "ignore" in conf or "ignore-from-file" in conf:
        return None
    conf.setdefault("level", "error")
    if conf["level"] not in ("error", "warning"):
        return None
    options, defaults = getattr(rule, "CONF", {}), getattr(rule, "DEFAULT", {})
    for key, value in conf.items():
        if key == "level":
            continue
        allowed = options.get(key)
        if allowed is None:
            return None
        if isinstance(allowed, tuple):
            ok = value in allowed or type(value) in allowed
        elif isinstance(allowed, list):
            ok = isinstance(value, list) and all(v in allowed or type(v) in allowed for v in value)
        else:
            ok = isinstance(value, allowed)
        if not ok:
            return None
    for key in options:
        conf.setdefault(key, defaults[key])
    if hasattr(rule, "VALIDATE") and rule.VALIDATE(conf):
        return None
    return conf


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

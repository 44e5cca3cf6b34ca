"""`kdc validate`: verdicts, located problems, formats, exit codes, extra checks, changed-since,
the cache, and bad input that must never produce a traceback."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from compiler.cli import cli
from compiler.validate.api import Stats, validate_paths, validate_tree

ROOT = Path(__file__).resolve().parent.parent
LINE = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<sev>error|warning) "
                  r"\[(?P<rule>[a-z0-9/-]+)\] (?P<rest>.+)$")


def parse(line: str) -> dict | None:
    """A human output line as a dict; the hint is the last balanced parenthesised group."""
    m = LINE.match(line)
    if not m:
        return None
    d = m.groupdict()
    rest = d.pop("rest")
    d["msg"], d["hint"] = rest, None
    if rest.endswith(")"):
        depth = 0
        for i in range(len(rest) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(rest[i], 0)
            if depth == 0:
                if rest[i - 1:i] == " ":
                    d["msg"], d["hint"] = rest[:i - 1], rest[i + 1:-1]
                break
    return d

TOPICS = ["a ferry crossing at dawn", "a library closing at night", "a market in the rain",
          "a glacier calving into the sea", "a kite stuck in an oak tree", "a lighthouse keeper's log",
          "bread rising in a cold kitchen", "a power cut during a storm"]
# (question, context, answer): examples with little in common, word for word
SEEDS = [
    ("How many legs does a spider have?", "Spiders are arachnids, not insects.", "Eight legs, unlike insects which have six."),
    ("Convert 3 kilometres to metres.", "One kilometre is a thousand metres.", "3 x 1000 = 3000 metres."),
    ("Name the capital city of Portugal.", "Lisbon sits on the Tagus estuary.", "Lisbon is Portugal's capital."),
    ("Why does ice float on water?", "Water expands when it freezes.", "Frozen water is less dense than liquid water."),
    ("Suggest a title for a mystery novel set on a train.", "The novel follows a detective travelling overnight.",
     "Murder on the Midnight Sleeper."),
    ("Which planet has the shortest year?", "Mercury orbits closest to the Sun.", "Mercury, at 88 Earth days."),
    ("Translate 'good morning' into Spanish.", "A greeting used before noon.", "Buenos dias."),
    ("What gas do plants absorb for photosynthesis?", "Leaves take in air through stomata.", "Carbon dioxide."),
    ("Who painted the Mona Lisa?", "A Renaissance portrait kept in the Louvre.", "Leonardo da Vinci."),
    ("How long is a marathon?", "Road races have standard distances.", "42.195 kilometres."),
    ("What is the boiling point of water at sea level?", "Measured in degrees Celsius.", "100 degrees Celsius."),
    ("Give an antonym of generous.", "Antonyms have opposite meanings.", "Stingy."),
    ("Which ocean lies between Africa and Australia?", "Three large oceans border Africa.", "The Indian Ocean."),
    ("Spell the plural of mouse.", "Some English plurals are irregular.", "Mice."),
    ("What does a thermometer measure?", "Instruments measure physical quantities.", "Temperature."),
]


def skill(n: int = 5, version: int = 3, context: bool = False, extra: str = "", start: int = 0) -> str:
    """A valid compositional skill with n clearly different seed examples (SEEDS[start:start+n])."""
    seeds = []
    for q, c, a in SEEDS[start:start + n]:
        ctx = f"    context: {c}\n" if context else ""
        seeds.append(f"  - question: {q}\n{ctx}    answer: {a}\n")
    head = f"version: {version}\n" if version else ""
    return (f"{head}created_by: tester\ntask_description: Answer a general question.\n"
            f"seed_examples:\n{''.join(seeds)}{extra}")


def knowledge(repo: str, commit: str, patterns: str = "['*.md']") -> str:
    seeds = []
    for i in range(5):
        qas = "".join(f"      - question: {SEEDS[3 * i + j][0]}\n"
                      f"        answer: {SEEDS[3 * i + j][2]}\n" for j in range(3))
        seeds.append(f"  - context: Part {i} of the document tells of {TOPICS[i]} and nothing else.\n"
                     f"    questions_and_answers:\n{qas}")
    return (f"version: 3\ncreated_by: tester\ndomain: Scenes\ndocument_outline: Short scenes.\n"
            f"seed_examples:\n{''.join(seeds)}document:\n  repo: {repo}\n  commit: '{commit}'\n"
            f"  patterns: {patterns}\n")


def write(root: Path, rel: str, text: str | bytes, attribution: bool = True) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    if attribution:
        (path.parent / "attribution.txt").write_text("Title of work: test\nLicense of the work: CC0\n")
    return path


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg")))


def run(*args: str, root: Path | None = None):
    """The CLI in-process; returns (exit code, output lines, parsed problem lines)."""
    argv = ["validate", *args] + (["--root", str(root)] if root is not None else [])
    result = CliRunner().invoke(cli, argv, catch_exceptions=True)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert "Traceback" not in result.output
    lines = result.output.splitlines()
    return result.exit_code, lines, [d for d in map(parse, lines) if d]


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    return subprocess.run(["git", "-c", "commit.gpgsign=false", *args], cwd=cwd, env=env, check=True,
                          capture_output=True, text=True).stdout.strip()


def doc_repo(path: Path, files: dict[str, str]) -> str:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "docs")
    return git(path, "rev-parse", "HEAD")


# ---------------------------------------------------------------- the example taxonomy, formats, exit codes

def test_example_taxonomy_validates_clean(example_taxonomy):
    for extra in ([], ["--strict"]):
        code, lines, problems = run(str(example_taxonomy), *extra, root=example_taxonomy)
        assert code == 0, lines
        assert problems == []
        assert lines[-1] == "6 files checked: 6 valid, 0 invalid (0 errors, 0 warnings)"


def test_human_format(tmp_path, monkeypatch):
    write(tmp_path, "compositional_skills/a/qna.yaml", skill().replace("created_by: tester", "created_by: tester   "))
    monkeypatch.chdir(tmp_path)  # paths are shown relative to the working directory
    code, lines, problems = run()
    assert code == 1
    [p] = problems
    assert p == {"path": "compositional_skills/a/qna.yaml", "line": "2",
                 "col": "19", "sev": "error", "rule": "yamllint/trailing-spaces", "msg": "trailing spaces",
                 "hint": "delete the spaces or tabs at the end of the line"}
    assert lines[-1] == "1 file checked: 0 valid, 1 invalid (1 error, 0 warnings)"


def test_json_format(tmp_path):
    write(tmp_path, "compositional_skills/good/qna.yaml", skill())
    write(tmp_path, "compositional_skills/bad/qna.yaml", skill(3, start=10))
    result = CliRunner().invoke(cli, ["validate", "--format", "json", "--root", str(tmp_path), str(tmp_path)])
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert [(Path(f["path"]).parent.name, f["valid"]) for f in data["files"]] == [("bad", False), ("good", True)]
    bad = data["files"][0]
    assert bad["problems"] == [{"line": 4, "column": 1, "severity": "error", "rule": "schema/min-items",
                                "message": "seed_examples has 3 items; at least 5 are required",
                                "hint": bad["problems"][0]["hint"]}]
    assert (bad["kind"], bad["version"]) == ("freeform_skill", 3)
    s = data["summary"]
    assert (s["files"], s["valid"], s["invalid"], s["errors"], s["warnings"]) == (2, 1, 1, 1, 0)


def test_github_format(tmp_path, monkeypatch):
    write(tmp_path, "compositional_skills/a,b/qna.yaml", skill(extra="bogus: 100%\n"))
    monkeypatch.chdir(tmp_path)
    code, lines, _ = run("--format", "github")
    assert code == 1
    [annotation] = [ln for ln in lines if ln.startswith("::")]
    assert annotation.startswith("::error file=compositional_skills/a%2Cb/qna.yaml,line=15,col=1,"
                                 "title=schema/unevaluated::")
    assert "unknown key 'bogus' at the top level" in annotation
    assert lines[-1].startswith("1 file checked: 0 valid, 1 invalid")


def test_usage_errors_exit_2(tmp_path):
    assert run(str(tmp_path / "missing"))[0] == 2
    assert run("--format", "xml", str(tmp_path))[0] == 2
    code, lines, _ = run("--changed-since", "main", root=tmp_path)
    assert code == 2
    assert any("needs a git repository" in ln for ln in lines)


def test_library_api(tmp_path):
    write(tmp_path, "compositional_skills/b/qna.yaml", skill(extra="zzz: 1\naaa: 2\n"))
    write(tmp_path, "compositional_skills/a/qna.yaml", skill(start=5))
    results = validate_tree(tmp_path)
    assert [r.path for r in results] == ["compositional_skills/a/qna.yaml", "compositional_skills/b/qna.yaml"]
    assert results[0].valid and results[0].problems == []
    bad = results[1]
    assert not bad.valid
    assert [(p.line, p.rule, p.path) for p in bad.problems] == [
        (15, "schema/unevaluated", "compositional_skills/b/qna.yaml"),
        (16, "schema/unevaluated", "compositional_skills/b/qna.yaml")]


# ---------------------------------------------------------------- the reference's rules, located

def test_schema_errors_point_at_the_node(tmp_path):
    text = textwrap.dedent("""\
        version: 3
        created_by: tester
        task_description: t
        seed_examples:
          - question: one
            answr: typo
          - question: two
            answer: [not, text]
          - question: three
            answer: a3
          - question: four
            answer: a4
          - question: five
            answer: a5
        """)
    write(tmp_path, "compositional_skills/x/qna.yaml", text)
    code, _, problems = run(root=tmp_path)
    assert code == 1
    got = [(int(p["line"]), int(p["col"]), p["rule"]) for p in problems]
    assert got == [(5, 5, "schema/required"),  # missing 'answer': at the seed's mapping
                   (6, 5, "schema/unevaluated"),  # unknown 'answr': at the key
                   (8, 13, "schema/type")]  # a list instead of text: at the value
    assert "did you mean 'answer'" in problems[1]["hint"]
    assert problems[2]["msg"] == "seed_examples[1].answer must be text, not a list"


def test_file_names_are_never_skipped(tmp_path):
    write(tmp_path, "compositional_skills/a/qna.yml", skill())
    write(tmp_path, "compositional_skills/b/QnA.yaml", skill(start=5))
    template = write(tmp_path, "docs/template_qna.yaml", skill())
    code, lines, problems = run(root=tmp_path)
    assert code == 1
    assert sorted((Path(p["path"]).name, p["rule"]) for p in problems) == [("QnA.yaml", "file-name"),
                                                                           ("qna.yml", "file-name")]
    assert "2 files checked" in lines[-1]
    code, _, problems = run(str(template), root=tmp_path)  # named explicitly: checked, and refused
    assert code == 1 and [p["rule"] for p in problems] == ["file-name"]


def test_kind_comes_from_the_folder_then_the_content(tmp_path):
    repo = tmp_path / "docs"
    commit = doc_repo(repo, {"a.md": "# A\n"})
    (tmp_path / ".git").mkdir()  # tax/ lives in a checkout that also holds docs/
    text = knowledge("../docs", commit)
    write(tmp_path, "tax/knowledge/k/qna.yaml", text)
    write(tmp_path, "tax/misc/k/qna.yaml", text)  # no taxonomy folder: knowledge by content
    write(tmp_path, "tax/compositional_skills/k/qna.yaml", text)  # checked as a skill
    write(tmp_path, "tax/foundational_skills/s/qna.yaml", skill())  # not a reference folder: by content
    results = {r.path: r for r in validate_tree(tmp_path / "tax")}
    assert results["knowledge/k/qna.yaml"].valid and results["knowledge/k/qna.yaml"].kind == "knowledge"
    assert results["misc/k/qna.yaml"].valid
    assert results["foundational_skills/s/qna.yaml"].valid
    assert results["foundational_skills/s/qna.yaml"].kind == "foundational_skill"
    skill_rules = {p.rule for p in results["compositional_skills/k/qna.yaml"].problems}
    assert {"schema/required", "schema/unevaluated"} <= skill_rules


def test_yamllint_runs_for_version_2_and_later_only(tmp_path):
    trailing = skill().replace("created_by: tester", "created_by: tester ")
    write(tmp_path, "v3/compositional_skills/a/qna.yaml", trailing)
    write(tmp_path, "v1/compositional_skills/a/qna.yaml", trailing.replace("version: 3", "version: 1"))
    write(tmp_path, "warn/compositional_skills/a/qna.yaml", skill().replace("seed_examples:", "\n\n\nseed_examples:"))
    assert [p.rule for r in validate_tree(tmp_path / "v3") for p in r.problems] == ["yamllint/trailing-spaces"]
    assert all(r.valid and not r.problems for r in validate_tree(tmp_path / "v1"))
    [warned] = validate_tree(tmp_path / "warn")
    assert warned.valid
    assert [(p.severity, p.rule, p.line) for p in warned.problems] == [("warning", "yamllint/empty-lines", 6)]


@pytest.mark.parametrize("version, rule", [
    ("1", None), ("2", None), ("4", "version-unsupported"), ("true", "version-unsupported"),
    ("'3'", "schema/type"), ("3.0", None), (".inf", "version-unsupported")])
def test_declared_versions(tmp_path, version, rule):
    text = skill().replace("version: 3", f"version: {version}")
    write(tmp_path, "compositional_skills/a/qna.yaml", text)
    [r] = validate_tree(tmp_path)
    errors = [p.rule for p in r.problems if p.severity == "error"]
    assert errors == ([rule] if rule else [])


def test_knowledge_v1_and_v2_are_deprecated(tmp_path):
    write(tmp_path, "knowledge/k/qna.yaml", "version: 2\ncreated_by: me\ndomain: d\n")
    [r] = validate_tree(tmp_path)
    assert [(p.line, p.column, p.rule) for p in r.problems if p.severity == "error"] == [
        (1, 10, "version-deprecated")]
    assert "Minimum supported version is 3" in r.problems[0].message


def test_empty_file_warns_like_the_reference_and_fails_strict(tmp_path):
    write(tmp_path, "compositional_skills/a/qna.yaml", "# nothing yet\n")
    code, _, problems = run(root=tmp_path)
    assert code == 0 and [(p["sev"], p["rule"]) for p in problems] == [("warning", "empty-file")]
    code, _, problems = run("--strict", root=tmp_path)
    assert code == 1 and [(p["sev"], p["rule"]) for p in problems] == [("error", "empty-file")]


# ---------------------------------------------------------------- bad input: located errors, never a traceback

def _deep() -> str:
    return "a: " + "[" * 10_000 + "]" * 10_000 + "\n"


def _bomb() -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 12)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("content, rule, line", [
    (b"version: 3\ncreated_by: caf\xe9\n", "invalid-utf8", 2),
    (b"\x7fELF\x02\x01\x01\x00\x00\x00", "binary-file", 1),
    ("- version: 3\n- created_by: me\n", "top-level-not-mapping", 1),
    (_bomb(), "alias-bomb", None),
    (_deep(), "nesting-too-deep", 1),
    (skill().replace("created_by: tester\n", "created_by: tester\ncreated_by: other\n"), "duplicate-key", 3),
    ("version: 3\nseed_examples:\n\t- question: q\n", "yaml-syntax", 3),
    ("version: 3\ntask_description: what: now\n", "yaml-syntax", 2),
])
def test_bad_input_is_a_located_error(tmp_path, content, rule, line):
    write(tmp_path, "compositional_skills/a/qna.yaml", content)
    started = time.perf_counter()
    code, _, problems = run(root=tmp_path)
    assert time.perf_counter() - started < 10
    assert code == 1
    errors = [p for p in problems if p["sev"] == "error"]
    assert errors and errors[0]["rule"] == rule
    if line is not None:
        assert int(errors[0]["line"]) == line


def test_huge_file_is_refused_quickly(tmp_path):
    path = tmp_path / "compositional_skills/a/qna.yaml"
    path.parent.mkdir(parents=True)
    with path.open("wb") as fh:
        fh.truncate(50 * 1024 * 1024)
    started = time.perf_counter()
    code, _, problems = run(root=tmp_path)
    assert time.perf_counter() - started < 5
    assert code == 1 and [(p["rule"], p["line"]) for p in problems] == [("file-too-large", "1")]


def test_duplicate_keys_in_version_1_warn_like_the_reference_and_fail_strict(tmp_path):
    text = skill(version=1).replace("created_by: tester\n", "created_by: tester\ncreated_by: other\n")
    write(tmp_path, "compositional_skills/a/qna.yaml", text)
    code, _, problems = run(root=tmp_path)
    assert code == 0 and [(p["sev"], p["rule"], p["line"]) for p in problems] == [("warning", "duplicate-key", "3")]
    code, _, problems = run("--strict", root=tmp_path)
    assert code == 1 and [(p["sev"], p["rule"]) for p in problems] == [("error", "duplicate-key")]


def test_symlink_loop_and_escape_are_errors(tmp_path):
    root = tmp_path / "tax"
    write(root, "compositional_skills/a/qna.yaml", skill())
    os.symlink(root / "compositional_skills", root / "compositional_skills/a/loop")
    secret = write(tmp_path, "secret/qna.yaml", skill())
    os.symlink(secret, root / "compositional_skills/qna.yaml")
    code, _, problems = run(root=root)
    assert code == 1
    assert sorted((Path(p["path"]).name, p["rule"]) for p in problems) == [("loop", "symlink-loop"),
                                                                          ("qna.yaml", "path-escapes-root")]


def test_real_cli_never_prints_a_traceback(tmp_path):
    write(tmp_path, "compositional_skills/a/qna.yaml", b"\xff\xfe garbage \x00")
    write(tmp_path, "compositional_skills/b/qna.yaml", _bomb())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "compiler", "validate", "--root", str(tmp_path), "--no-cache"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 1
    assert "Traceback" not in out.stdout + out.stderr
    assert "[binary-file]" in out.stdout and "[alias-bomb]" in out.stdout


# ---------------------------------------------------------------- checks the reference lacks

def test_size_limits_warn_then_fail_strict_and_are_configurable(tmp_path):
    long_context = " ".join(f"w{i}" for i in range(520))
    text = skill(context=True).replace(SEEDS[0][1], long_context + " " + SEEDS[0][1], 1)
    write(tmp_path, "compositional_skills/a/qna.yaml", text)
    code, _, problems = run(root=tmp_path)
    assert code == 0
    assert [(p["sev"], p["rule"], p["line"]) for p in problems] == [("warning", "size/context-words", "6")]
    assert "seed_examples[0].context has 525 words; the limit is 500" in problems[0]["msg"]
    assert run("--strict", root=tmp_path)[0] == 1
    assert run("--max-context-words", "600", root=tmp_path)[2] == []
    code, _, problems = run("--max-context-words", "600", "--max-qa-words", "15", root=tmp_path)
    assert code == 0 and [(p["rule"], p["line"]) for p in problems] == [("size/qa-words", "17")]  # the novel
    assert [p["rule"] for p in run("--max-context-words", "600", "--max-skill-words", "500", root=tmp_path)[2]] == [
        "size/seed-words"]


LONG_Q = ("Plan a three day walking trip through the hills near a small coastal town, with one long hike, "
          "one rest day by the sea, and a short loop on the last morning before the train home.")


def test_duplicate_seeds_within_a_leaf(tmp_path):
    q1, _, a1 = SEEDS[1]
    text = skill(extra=(f"  - question: {LONG_Q}\n    answer: Day one hike, day two beach, day three loop.\n"
                        f"  - question: {q1.upper()}\n    answer: {a1}\n"  # same words as seed 1: exact
                        f"  - question: {LONG_Q.replace('three day', 'four day')}\n"  # one word changed: near
                        f"    answer: Day one hike, day two beach, day three loop.\n"))
    write(tmp_path, "compositional_skills/a/qna.yaml", text)
    code, _, problems = run(root=tmp_path)
    assert code == 0  # the reference accepts these: the items are not identical
    assert [(p["rule"], p["line"]) for p in problems] == [("dup/exact-seed", "17"), ("dup/near-seed", "19")]
    assert problems[0]["msg"] == "seed_examples[6] repeats seed_examples[1] (line 7)"
    assert problems[1]["msg"].startswith("seed_examples[7] is nearly the same as seed_examples[5] (line 15, similarity")
    assert run("--strict", root=tmp_path)[0] == 1
    assert [p["rule"] for p in run("--near-dup-threshold", "0.99", root=tmp_path)[2]] == ["dup/exact-seed"]


def test_same_context_different_questions_is_not_a_duplicate(tmp_path):
    seeds = "".join(f"  - context: The same long shared passage about {TOPICS[0]} for every example.\n"
                    f"    question: Question {i}, what does the passage say about {TOPICS[i]}?\n"
                    f"    answer: It says nothing about {TOPICS[i]}, only about {TOPICS[0]}.\n" for i in range(1, 6))
    write(tmp_path, "compositional_skills/g/qna.yaml",
          f"version: 3\ncreated_by: t\ntask_description: Answer from the passage.\nseed_examples:\n{seeds}")
    assert validate_tree(tmp_path)[0].problems == []


def test_duplicate_seeds_across_sibling_leaves(tmp_path):
    write(tmp_path, "compositional_skills/writing/a/qna.yaml", skill())
    write(tmp_path, "compositional_skills/writing/b/qna.yaml", skill(start=4))  # shares SEEDS[4] with a
    write(tmp_path, "compositional_skills/cooking/c/qna.yaml", skill())  # not a sibling: not compared
    results = {r.path: r for r in validate_tree(tmp_path)}
    assert results["compositional_skills/writing/a/qna.yaml"].problems == []
    assert results["compositional_skills/cooking/c/qna.yaml"].problems == []
    [p] = results["compositional_skills/writing/b/qna.yaml"].problems
    assert (p.rule, p.line, p.severity) == ("dup/sibling-seed", 5, "warning")
    assert p.message == ("seed_examples[0] repeats seed_examples[4] of the sibling leaf "
                         "compositional_skills/writing/a/qna.yaml (line 13)")


def test_attribution_txt_for_version_2_and_later(tmp_path):
    write(tmp_path, "compositional_skills/a/qna.yaml", skill(), attribution=False)
    write(tmp_path, "compositional_skills/b/qna.yaml", skill(version=1, start=5), attribution=False)
    code, _, problems = run(root=tmp_path)
    assert code == 0
    assert [(Path(p["path"]).parent.name, p["rule"], p["sev"]) for p in problems] == [
        ("a", "attribution-missing", "warning")]
    assert run("--strict", root=tmp_path)[0] == 1


def line_of(text: str, start: str) -> int:
    return next(i for i, ln in enumerate(text.splitlines(), 1) if ln.startswith(start))


def test_documents_resolve_with_real_git(tmp_path):
    commit = doc_repo(tmp_path / "repos/docs", {"guide.md": "# Guide\n", "notes.txt": "x\n"})
    (tmp_path / ".git").mkdir()  # one checkout holds tax/ and repos/: ../repos is inside it
    tax = tmp_path / "tax"
    cases = {"ok": knowledge("../repos/docs", commit),  # relative repo paths start at the root
             "bad_commit": knowledge("../repos/docs", "0" * 40),
             "branch": knowledge("../repos/docs", "main"),  # compile needs a pinned sha: so does validate
             "no_match": knowledge("../repos/docs", commit, "['*.pdf']"),
             "not_docs": knowledge("../repos/docs", commit, "['*.txt']"),
             "escape": knowledge("../repos/docs", commit, "['../../etc/passwd', '*.md']"),
             "no_repo": knowledge("../repos/missing", commit),
             "remote": knowledge("https://example.invalid/docs.git", commit)}
    for name, text in cases.items():  # one parent folder each: no sibling comparisons
        write(tax, f"knowledge/{name}/leaf/qna.yaml", text)
    stats = Stats()
    results = {r.path.split("/")[1]: r for r in validate_paths([tax], root=tax, stats=stats)}
    rules = {name: [(p.rule, p.line) for p in r.problems] for name, r in results.items()}
    repo, commit_line, patterns = (line_of(cases["ok"], k) for k in ("  repo:", "  commit:", "  patterns:"))
    assert rules["ok"] == [] and rules["remote"] == []
    assert rules["bad_commit"] == [("document-unresolved", commit_line)]
    assert rules["branch"] == [("document-unresolved", commit_line)]
    assert "'main' is not a commit sha" in results["branch"].problems[0].message
    assert rules["no_match"] == [("document-unresolved", patterns)] * 2  # the pattern, then "no document"
    assert rules["not_docs"] == [("document-unresolved", patterns)]
    assert rules["escape"] == [("document-pattern-unsafe", patterns)]
    assert rules["no_repo"] == [("document-unresolved", repo)]
    assert "commit 0000000000000000000000000000000000000000 not found" in results["bad_commit"].problems[0].message
    assert all(r.valid for r in results.values())  # warnings by default...
    assert (stats.documents_checked, stats.documents_unchecked) == (7, 1)
    strict = validate_paths([tax], root=tax, strict=True)
    assert sum(not r.valid for r in strict) == 6  # ...errors with --strict


def test_remote_documents_are_checked_only_with_fetch(tmp_path):
    commit = doc_repo(tmp_path / "upstream", {"doc.md": "# Doc\n"})
    url = (tmp_path / "upstream").as_uri()  # file:// stands in for a remote
    tax = tmp_path / "tax"
    write(tax, "knowledge/k/leaf/qna.yaml", knowledge(url, commit))
    write(tax, "knowledge/stale/leaf/qna.yaml", knowledge(url, "1" * 40))
    refused = validate_paths([tax], root=tax, fetch=True)  # file:// only on the maintainer's say
    assert {p.rule for r in refused for p in r.problems} == {"document-repo-outside"}
    allow = (tmp_path.as_uri(),)
    stats = Stats()
    assert all(not r.problems for r in validate_paths([tax], root=tax, stats=stats, allow_repos=allow))
    assert stats.documents_unchecked == 2
    stats = Stats()
    results = validate_paths([tax], root=tax, fetch=True, stats=stats, allow_repos=allow)
    assert stats.documents_checked == 2
    assert [(r.path, p.rule) for r in results for p in r.problems] == [
        ("knowledge/stale/leaf/qna.yaml", "document-unresolved")]
    # the clone is now cached: checked again without --fetch, and without the network
    stats = Stats()
    validate_paths([tax], root=tax, stats=stats, allow_repos=allow)
    assert stats.documents_checked == 2


# ---------------------------------------------------------------- --changed-since

def test_changed_since(tmp_path, monkeypatch):
    repo = tmp_path / "taxonomy-repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    write(repo, "compositional_skills/old/qna.yaml", skill())
    write(repo, "compositional_skills/edited/qna.yaml", skill())
    write(repo, "compositional_skills/gone/qna.yaml", skill())
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    git(repo, "checkout", "-q", "-b", "feature")
    monkeypatch.chdir(repo)
    code, lines, _ = run("--changed-since", "main")
    assert code == 0 and "nothing to validate" in lines[-1]
    write(repo, "compositional_skills/committed/qna.yaml", skill(3))  # committed on the branch, invalid
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "add")
    write(repo, "compositional_skills/edited/qna.yaml", skill(extra="oops: 1\n"))  # uncommitted edit
    write(repo, "compositional_skills/untracked/qna.yml", skill())  # untracked, misnamed
    (repo / "compositional_skills/gone/qna.yaml").unlink()  # deleted: nothing to check
    code, lines, problems = run("--changed-since", "main", "--format", "human")
    assert code == 1
    assert lines[-1].startswith("3 files checked: 0 valid, 3 invalid")
    assert sorted({Path(p["path"]).parent.name for p in problems}) == ["committed", "edited", "untracked"]
    git(repo, "checkout", "-q", "main", "--", ".")
    code, lines, _ = run("--changed-since", "no-such-branch")
    assert code == 2 and any("unknown git reference" in ln for ln in lines)


# ---------------------------------------------------------------- cache and parallel runs

def test_cache_hits_and_invalidation(tmp_path):
    for i in range(3):
        write(tmp_path, f"compositional_skills/s{i}/qna.yaml", skill(extra=f"bad{i}: 1\n" if i else "", start=5 * i))
    cache = tmp_path / "cache"
    cold, warm = Stats(), Stats()
    first = validate_tree(tmp_path, cache_dir=cache, stats=cold)
    second = validate_tree(tmp_path, cache_dir=cache, stats=warm)
    assert (cold.cache_hits, warm.cache_hits) == (0, 3)
    assert [(r.path, r.valid, r.problems) for r in first] == [(r.path, r.valid, r.problems) for r in second]
    write(tmp_path, "compositional_skills/s0/qna.yaml", skill(extra="now_bad: 1\n"))
    third = Stats()
    assert not validate_tree(tmp_path, cache_dir=cache, stats=third)[0].valid
    assert third.cache_hits == 2
    strict = Stats()
    validate_tree(tmp_path, cache_dir=cache, strict=True, stats=strict)  # options are part of the key
    assert strict.cache_hits == 0


def test_no_cache_writes_nothing(tmp_path, monkeypatch):
    xdg = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    write(tmp_path, "tax/compositional_skills/a/qna.yaml", skill())
    assert run("--no-cache", root=tmp_path / "tax")[0] == 0
    assert not (xdg / "kdc" / "validate").exists()
    assert run(root=tmp_path / "tax")[0] == 0
    assert list((xdg / "kdc" / "validate").rglob("*.json"))


def test_parallel_results_equal_serial(tmp_path):
    for i in range(30):
        text = skill(extra="bad: 1\n") if i % 3 == 0 else skill(version=1 + i % 3)
        write(tmp_path, f"compositional_skills/g{i % 4}/s{i}/qna.yaml", text)
    serial = validate_tree(tmp_path, jobs=1)
    parallel = validate_tree(tmp_path, jobs=2)
    assert [(r.path, r.valid, r.problems) for r in serial] == [(r.path, r.valid, r.problems) for r in parallel]
    assert sum(not r.valid for r in serial) == 10


def test_ci_snippets_run_as_written(tmp_path, monkeypatch):
    """The pre-commit hook and the example workflow run `kdc validate --changed-since origin/main
    --format github`: run exactly that in a clone whose origin has a main branch."""
    import shlex

    import yaml

    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    workflow = yaml.safe_load((ROOT / "examples/github-workflow.yml").read_text())
    commands = [h["entry"] for h in hooks]
    commands += [s["run"] for s in workflow["jobs"]["validate"]["steps"] if "kdc validate" in s.get("run", "")]
    assert "kdc validate --changed-since origin/main --format github" in commands
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    git(upstream, "init", "-q", "-b", "main")
    write(upstream, "compositional_skills/base/qna.yaml", skill())
    git(upstream, "add", "-A")
    git(upstream, "commit", "-q", "-m", "base")
    git(tmp_path, "clone", "-q", str(upstream), "work")
    work = tmp_path / "work"
    git(work, "checkout", "-q", "-b", "contribution")
    write(work, "compositional_skills/new/qna.yaml", skill(4, start=5))
    monkeypatch.chdir(work)
    ci = shlex.split("kdc validate --changed-since origin/main --format github")
    code, lines, _ = run(*ci[2:])
    assert code == 1
    assert lines[0].startswith("::error file=compositional_skills/new/qna.yaml,line=4,col=1,title=schema/min-items::")
    assert lines[-1].startswith("1 file checked: 0 valid, 1 invalid")
    hook = next(h for h in hooks if h["pass_filenames"])  # pre-commit passes the staged files
    code, lines, problems = run(*shlex.split(hook["entry"])[2:], "compositional_skills/new/qna.yaml")
    assert code == 1 and [p["rule"] for p in problems] == ["schema/min-items"]


def test_batched_minhash_is_datasketch_bit_for_bit(tmp_path, monkeypatch):
    """Signatures are computed per file in one numpy pass; each equals datasketch's MinHash of
    the same shingles, including sets that span the memory-bounding blocks. The permutations
    come from datasketch (kept in the user cache so later runs need not import it)."""
    import random

    import numpy as np
    from datasketch import MinHash

    from compiler import minhash
    from compiler.validate import checks

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    minhash.permutations.cache_clear()
    first = checks._permutations()
    minhash.permutations.cache_clear()
    assert list((tmp_path / "kdc").glob("minhash-datasketch-*.npy"))
    again = checks._permutations()  # read back from the cache file
    minhash.permutations.cache_clear()
    reference = MinHash(num_perm=checks.NUM_PERM, seed=1).permutations
    assert all((x == y).all() and (x == r).all() for x, y, r in zip(first, again, reference))
    rng = random.Random(3)
    sets = [[rng.getrandbits(32) for _ in range(rng.randint(1, 50))] for _ in range(100)]
    sets += [[rng.getrandbits(32) for _ in range(70_000)], [7]]
    hv = np.array([h for s in sets for h in s], dtype=np.uint32)
    rows = minhash.signature_matrix(hv, np.array([len(s) for s in sets]), checks.NUM_PERM)
    for shingles, row in zip(sets, rows):
        m = MinHash(num_perm=checks.NUM_PERM, seed=1, hashfunc=lambda v: v)
        m.update_batch(shingles)
        assert (m.hashvalues == row).all()
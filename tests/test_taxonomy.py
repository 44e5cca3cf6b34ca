"""compiler.taxonomy.tree: the tree model (networkx), kinds, the walk and its symlink safety."""

from __future__ import annotations

import hashlib
import os
import shutil
import textwrap
from pathlib import Path

import pytest

from compiler.errors import TaxonomyError
from compiler.taxonomy.tree import is_qna_like, kind_of, load_taxonomy, walk

SKILL = textwrap.dedent("""\
    version: 3
    created_by: tester
    task_description: Say hello.
    seed_examples:
      - question: Greet Ann.
        answer: Hello, Ann.
      - question: Greet Bob.
        answer: Hello, Bob.
      - question: Greet Cy.
        answer: Hello, Cy.
      - question: Greet Di.
        answer: Hello, Di.
      - question: Greet Ed.
        answer: Hello, Ed.
    """)

GROUNDED = SKILL.replace("  - question: Greet Ann.", "  - context: Ann is a friend.\n    question: Greet Ann.")


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_example_taxonomy_tree(example_taxonomy):
    tax = load_taxonomy(example_taxonomy)
    leaves = {leaf.node_id: leaf for leaf in tax.leaves()}
    assert {n: leaf.kind for n, leaf in leaves.items()} == {
        "compositional_skills/extraction/grounded/meeting_action_items": "grounded_skill",
        "compositional_skills/reasoning/freeform/word_problems": "freeform_skill",
        "compositional_skills/summarization/grounded/incident_report": "grounded_skill",
        "compositional_skills/writing/freeform/haiku": "freeform_skill",
        "knowledge/science/astronomy/solar_system": "knowledge",
        "knowledge/technology/version_control/git_internals": "knowledge",
    }
    g = tax.graph
    haiku = "compositional_skills/writing/freeform/haiku"
    # a node per folder, edges parent -> child, from the root ("") down to each leaf
    assert list(g.predecessors(haiku)) == ["compositional_skills/writing/freeform"]
    assert set(g.successors("")) == {"compositional_skills", "knowledge"}
    assert g.nodes["compositional_skills/writing"]["kind"] == "branch"
    attrs = g.nodes[haiku]
    assert attrs["leaf"] and attrs["version"] == 3 and attrs["kind"] == "freeform_skill"
    raw = (example_taxonomy / haiku / "qna.yaml").read_bytes()
    assert attrs["content_hash"] == hashlib.sha256(raw).hexdigest() == leaves[haiku].content_hash
    assert attrs["content"]["task_description"].startswith("Write a haiku")
    assert attrs["file"] == f"{haiku}/qna.yaml"
    assert Path(attrs["path"]) == example_taxonomy.resolve() / haiku
    assert tax.leaf(haiku).ancestors == ("compositional_skills", "writing", "freeform", "haiku")
    # knowledge seeds: one per Q&A, carrying its context
    seeds = tax.leaf("knowledge/science/astronomy/solar_system").seeds()
    assert len(seeds) == 15 and all(s.context for s in seeds)
    assert seeds[0].question == "How old is the Solar System?"


def test_siblings_and_content_hash(tmp_path):
    for name in ("a", "b", "c"):
        write(tmp_path, f"compositional_skills/writing/{name}/qna.yaml", SKILL)
    write(tmp_path, "compositional_skills/other/d/qna.yaml", SKILL)
    tax = load_taxonomy(tmp_path)
    assert tax.siblings("compositional_skills/writing/b") == ["compositional_skills/writing/a",
                                                              "compositional_skills/writing/c"]
    assert tax.siblings("compositional_skills/other/d") == []
    before = tax.content_hash()
    assert load_taxonomy(tmp_path).content_hash() == before  # stable
    write(tmp_path, "compositional_skills/writing/c/qna.yaml", SKILL.replace("Hello, Ed.", "Hi, Ed."))
    assert load_taxonomy(tmp_path).content_hash() != before


def test_kinds_from_folder_then_content(tmp_path):
    write(tmp_path, "compositional_skills/x/qna.yaml", GROUNDED)
    write(tmp_path, "foundational_skills/reasoning/y/qna.yaml", SKILL)
    write(tmp_path, "misc/z/qna.yaml", SKILL)  # no kind folder: skill by content
    write(tmp_path, "misc/k/qna.yaml", SKILL + "document:\n  repo: r\n  commit: c\n  patterns: ['*.md']\n")
    kinds = {leaf.node_id: leaf.kind for leaf in load_taxonomy(tmp_path).leaves()}
    assert kinds == {"compositional_skills/x": "grounded_skill",
                     "foundational_skills/reasoning/y": "foundational_skill",
                     "misc/z": "freeform_skill", "misc/k": "knowledge"}
    # the nearest enclosing kind folder wins
    assert kind_of("knowledge/compositional_skills/a/qna.yaml", {}) == "freeform_skill"
    assert kind_of("compositional_skills/knowledge/a/qna.yaml", {}) == "knowledge"


def test_qna_like_names():
    assert is_qna_like("qna.yaml") and is_qna_like("qna.yml") and is_qna_like("QnA.YAML")
    assert not is_qna_like("template_qna.yaml") and not is_qna_like("qna.json")


def test_walk_finds_misnamed_files_and_skips_git(tmp_path):
    write(tmp_path, "compositional_skills/a/qna.yml", SKILL)
    write(tmp_path, "compositional_skills/b/QnA.yaml", SKILL)
    write(tmp_path, ".git/x/qna.yaml", SKILL)
    files, problems = walk(tmp_path)
    assert [f.rel for f in files] == ["compositional_skills/a/qna.yml", "compositional_skills/b/QnA.yaml"]
    assert problems == []


def test_walk_reports_symlink_loop_and_escape(tmp_path):
    root = tmp_path / "tax"
    write(root, "compositional_skills/a/qna.yaml", SKILL)
    outside = write(tmp_path, "outside/qna.yaml", SKILL)
    os.symlink(root / "compositional_skills", root / "compositional_skills/a/loop")
    os.symlink(outside.parent, root / "compositional_skills/escape")
    os.symlink(outside, root / "compositional_skills/qna.yaml")
    os.symlink("self", root / "self")  # a link to itself
    os.symlink(tmp_path / "nowhere.png", root / "image.png")  # broken, but not a qna file: ignored
    files, problems = walk(root)
    assert [f.rel for f in files] == ["compositional_skills/a/qna.yaml"]
    by_rel = {p.rel: p.rule for p in problems}
    assert by_rel == {"compositional_skills/a/loop": "symlink-loop",
                      "compositional_skills/escape": "path-escapes-root",
                      "compositional_skills/qna.yaml": "path-escapes-root",
                      "self": "symlink-loop"}


def test_walk_follows_symlinks_inside_the_root(tmp_path):
    write(tmp_path, "shared/qna.yaml", SKILL)
    write(tmp_path, "compositional_skills/x/README.md", "x")
    os.symlink(tmp_path / "shared", tmp_path / "compositional_skills/x/linked")
    files, problems = walk(tmp_path)
    assert problems == []
    # listed once, under the first path the (sorted) walk reaches it by
    assert [f.rel for f in files] == ["compositional_skills/x/linked/qna.yaml"]
    assert files[0].path == (tmp_path / "shared/qna.yaml").resolve()


def test_load_taxonomy_errors_are_located(tmp_path):
    write(tmp_path, "compositional_skills/a/qna.yaml", "version: 3\nseed_examples: [\n")
    with pytest.raises(TaxonomyError) as exc:
        load_taxonomy(tmp_path)
    assert exc.value.path == "compositional_skills/a/qna.yaml" and exc.value.line == 3
    shutil.rmtree(tmp_path / "compositional_skills")
    write(tmp_path, "compositional_skills/a/qna.yml", SKILL)
    with pytest.raises(TaxonomyError, match="must be named qna.yaml"):
        load_taxonomy(tmp_path)
    with pytest.raises(TaxonomyError, match="not a folder"):
        load_taxonomy(tmp_path / "missing")


def test_load_taxonomy_refuses_a_top_level_list(tmp_path):
    write(tmp_path, "compositional_skills/a/qna.yaml", "- a\n- b\n")
    with pytest.raises(TaxonomyError, match="mapping"):
        load_taxonomy(tmp_path)

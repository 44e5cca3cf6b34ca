"""Prompt-cache-friendly prompts: each generation template puts what all of a leaf's requests share
(system text, the leaf's description, the reply's format) first and what varies (the expert's
examples drawn for the request, the excerpt, the questions already asked, the audience) last; the
plan reports the shared share (compile/plan.prefix_share, characters)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from compiler.compile.plan import make_plan, prefix_share, task_for
from compiler.compile.prompts import Prompts
from compiler.config import load_config
from compiler.taxonomy.tree import load_taxonomy

ROOT = Path(__file__).resolve().parent.parent
SOLAR = "knowledge/science/astronomy/solar_system"


@pytest.fixture(scope="module", params=["one-qa", "typed"])
def planned(request, example_taxonomy, tmp_path_factory):
    """The example taxonomy planned for a real teacher: one Q&A a call, or typed mode with views off."""
    cfg_file = tmp_path_factory.mktemp("cfg") / "kdc.yaml"
    typed = "augment: {enabled: true, views: []}\n" if request.param == "typed" else "augment: {enabled: false}\n"
    cfg_file.write_text("seed: 3\nper_chunk: 1\n" + typed)
    cfg = load_config(example_taxonomy, cfg_file, {"teacher": "openai/x", "api_base": ["http://127.0.0.1:9/v1"],
                                                   "samples_per_node": 30})
    plans = {lp.node_id: lp for lp in make_plan(load_taxonomy(example_taxonomy), cfg)}
    return cfg, plans, request.param


def texts(lp, cfg, n=30):
    prompts = Prompts()
    calls = -(-lp.target // lp.questions) if lp.questions else lp.target
    return ["\n".join(m["content"] for m in prompts.render(task_for(lp, i, cfg)).messages) for i in range(min(n, calls))]


def test_a_knowledge_leaf_shares_most_of_its_prompt(planned):
    cfg, plans, mode = planned
    lp = plans[SOLAR]
    assert mode == "one-qa" or lp.questions  # typed mode is really on
    share = prefix_share(lp, cfg, lambda t: Prompts().render(t).messages)
    rendered = texts(lp, cfg)
    prefix = os.path.commonprefix(rendered)
    assert share == round(len(prefix) / (sum(map(len, rendered)) / len(rendered)), 4)
    # the rest is the per-request draw (examples, excerpt, the "do not repeat" list that round 1 fills
    # with the leaf's seed questions): 46-53 % here, from 19-20 % before the templates put it last
    assert share >= 0.4, share
    # the shared part holds the system text, the leaf and the whole reply format ...
    assert prefix.startswith("You write training data") and "Domain: Astronomy" in prefix
    assert '- "answer":' in prefix and "The shape" in prefix
    # ... and ends where the per-request draw starts: the expert's examples; after them only varying parts
    head, _, tail = prefix.partition("(one JSON object per line):\n")
    assert head != prefix and "\n" not in tail and not tail.strip("{\"question: ")  # within the first example
    for text in rendered:
        rest = text[len(prefix):]
        for varying in ("<document>", "difficulty; answer style"):
            assert varying in rest and varying not in prefix
    if mode == "typed":
        assert all("Section:" not in prefix and "in this order:" in t[len(prefix):] for t in rendered)


def test_every_leaf_puts_the_audience_and_the_excerpt_after_the_format(planned):
    cfg, plans, _ = planned
    for lp in plans.values():
        for text in texts(lp, cfg, 5):
            fmt = text.index('- "answer":')
            assert text.index("difficulty; answer style") > fmt
            assert text.index("(one JSON object per line):") > fmt
            if "<document>" in text:
                assert text.index("<document>") > text.index("(one JSON object per line):")
        assert prefix_share(lp, cfg, lambda t: Prompts().render(t).messages) > 0.3, lp.node_id


def test_the_dry_run_shows_the_shared_prefix_per_leaf(example_taxonomy, tmp_path, capsys, monkeypatch):
    import sys

    from compiler.cli import main

    shutil.copytree(example_taxonomy, tmp_path / "taxonomy")
    shutil.copytree(ROOT / "build" / "doc-repos", tmp_path / "build" / "doc-repos", symlinks=True)
    (tmp_path / ".git").mkdir()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")

    def run(*extra):
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["kdc", "compile", str(tmp_path / "taxonomy"), "--teacher", "openai/gpt-4o-mini",
                                          "--api-base", "http://127.0.0.1:9/v1", "--dry-run", *extra])
        with pytest.raises(SystemExit) as exc:
            main()
        assert exc.value.code == 0
        return capsys.readouterr().out

    plan = json.loads(run("--json"))
    shares = {k: n["prompt_prefix_share"] for k, n in plan["nodes"].items()}
    assert all(0.3 < s < 1 for s in shares.values()), shares
    table = run()
    assert "shared prefix" in table and f"{shares[SOLAR]:.0%}" in table

"""The plan: held-out eval split, diversity draws, leaf-specific prompts in a sandbox, cache keys."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from compiler.config import load_config
from compiler.errors import ConfigError, KdcError
from compiler.compile.generate import prepare
from compiler.compile.plan import draw_diversity, make_plan, split_seeds, task_for
from compiler.compile.prompts import Prompts
from compiler.taxonomy.tree import load_taxonomy

HAIKU = "compositional_skills/writing/freeform/haiku"
SOLAR = "knowledge/science/astronomy/solar_system"


@pytest.fixture(scope="module")
def plan(example_taxonomy):
    tax = load_taxonomy(example_taxonomy)
    cfg = load_config(example_taxonomy, None, {"samples_per_node": 4})
    return tax, cfg, {lp.node_id: lp for lp in make_plan(tax, cfg)}


def test_split_is_deterministic_disjoint_and_keeps_at_least_one_eval_seed(plan):
    tax, _, _ = plan
    for leaf in tax.leaves():
        seeds = leaf.seeds()
        train, held = split_seeds(leaf, 0.2, seed=7)
        assert (train, held) == split_seeds(leaf, 0.2, seed=7)
        assert len(held) == max(1, round(0.2 * len(seeds))) and train
        assert sorted(map(repr, train + held)) == sorted(map(repr, seeds))
        assert not set(map(repr, train)) & set(map(repr, held))
        assert len(split_seeds(leaf, 0.0, seed=7)[1]) == 1  # at least one, even with share 0
    knowledge = tax.leaf(SOLAR)
    assert {repr(s) for s in split_seeds(knowledge, 0.2, 1)[1]} != {repr(s) for s in split_seeds(knowledge, 0.2, 2)[1]}


def test_eval_seeds_are_never_shown_to_the_teacher(plan):
    _, cfg, plans = plan
    prompts = Prompts()
    for lp in plans.values():
        rendered = "\n".join(m["content"] for i in range(40)
                             for m in prompts.render(task_for(lp, i, cfg)).messages)
        for seed in lp.eval_seeds:
            assert seed.question not in rendered
            assert seed.answer.splitlines()[0] not in rendered
        shown = {i for i in range(40) for i in task_for(lp, i, cfg).seeds_shown}
        assert shown == set(range(len(lp.train_seeds)))  # every training seed gets used


def test_prompts_are_leaf_specific(plan):
    _, cfg, plans = plan
    prompts = Prompts()
    solar = prompts.render(task_for(plans[SOLAR], 0, cfg)).messages[1]["content"]
    assert "knowledge > science > astronomy > solar system" in solar
    assert "Domain: Astronomy" in solar and "Document outline: An overview of the Solar System" in solar
    chunk = task_for(plans[SOLAR], 0, cfg).chunk.text
    assert f"<document>\n{chunk}\n</document>" in solar
    # each pass over the chunks visits every chunk once, in a seeded order that is not file order
    lp, n = plans[SOLAR], len(plans[SOLAR].chunks)
    for p in range(3):
        assert sorted(plans[SOLAR].chunks.index(task_for(lp, p * n + i, cfg).chunk) for i in range(n)) == list(range(n))
    orders = [[lp.chunks.index(task_for(lp, p * n + i, cfg).chunk) for i in range(n)] for p in range(6)]
    assert any(o != list(range(n)) for o in orders) and len({tuple(o) for o in orders}) > 1
    haiku = prompts.render(task_for(plans[HAIKU], 0, cfg)).messages[1]["content"]
    assert "Write a haiku about the subject the user names" in haiku and "<document>" not in haiku
    d = task_for(plans[HAIKU], 3, cfg).diversity
    rendered3 = prompts.render(task_for(plans[HAIKU], 3, cfg)).messages[1]["content"].replace("\n", " ")
    assert d["persona"] in rendered3 and d["difficulty"] in rendered3 and d["style"] in rendered3


def test_diversity_is_seeded_by_seed_node_and_index():
    lists = {"personas": ["a", "b", "c", "d"], "difficulties": ["easy", "hard"], "styles": ["x", "y", "z"]}
    draws = [draw_diversity(lists, 7, "n", i) for i in range(30)]
    assert draws == [draw_diversity(lists, 7, "n", i) for i in range(30)]
    assert len({d["persona"] for d in draws}) == 4 and len({d["style"] for d in draws}) == 3
    assert draws != [draw_diversity(lists, 8, "n", i) for i in range(30)]
    assert draws != [draw_diversity(lists, 7, "m", i) for i in range(30)]


def _leaf_tree(tmp_path: Path, task_description: str) -> Path:
    leaf = tmp_path / "tax" / "compositional_skills" / "writing" / "freeform" / "trick"
    leaf.mkdir(parents=True)
    seeds = "".join(f"  - question: Write line number {i} about apples?\n    answer: Apples line {i}.\n"
                    for i in range(5))
    (leaf / "qna.yaml").write_text(f"version: 3\ncreated_by: tester\ntask_description: '{task_description}'\n"
                                   f"seed_examples:\n{seeds}", encoding="utf-8")
    return tmp_path / "tax"


def test_taxonomy_text_is_data_never_template_source(tmp_path):
    root = _leaf_tree(tmp_path, "Echo {{ 7*7 }} and {% for x in range(3) %}X{% endfor %} {{ config }}")
    tax = load_taxonomy(root)
    cfg = load_config(root, None, {})
    [lp] = make_plan(tax, cfg)
    user = Prompts().render(task_for(lp, 0, cfg)).messages[1]["content"]
    assert "Echo {{ 7*7 }} and {% for x in range(3) %}X{% endfor %} {{ config }}" in user
    assert "49" not in user and "XXX" not in user


def test_a_broken_template_is_a_located_error(tmp_path, plan):
    _, cfg, plans = plan
    tdir = tmp_path / "templates"
    shutil.copytree(Prompts().directory, tdir)
    (tdir / "generate_freeform.j2").write_text("{% block system %}{{ no_such_var }}{% endblock %}"
                                               "{% block user %}x{% endblock %}")
    with pytest.raises(KdcError, match="generate_freeform.j2"):
        Prompts(tdir).render(task_for(plans[HAIKU], 0, cfg))
    (tdir / "generate_freeform.j2").write_text("{% block system %}{{ oops {% endblock %}")
    with pytest.raises(KdcError, match="broken"):
        Prompts(tdir).render(task_for(plans[HAIKU], 0, cfg))


def test_request_key_covers_everything_that_decides_a_request(plan):
    _, cfg, plans = plan
    prompts = Prompts()
    task = task_for(plans[HAIKU], 0, cfg)
    base = prepare(task, prompts, "openai/t", cfg.sampling)
    assert base.key == prepare(task_for(plans[HAIKU], 0, cfg), prompts, "openai/t", cfg.sampling).key
    others = [prepare(task, prompts, "openai/u", cfg.sampling),
              prepare(task, prompts, "openai/t", {**cfg.sampling, "temperature": 0.1}),
              prepare(task_for(plans[HAIKU], 1, cfg), prompts, "openai/t", cfg.sampling)]
    assert len({base.key, *(o.key for o in others)}) == 4
    assert base.sample_id == base.key[:32]


def test_config_file_errors_are_located(tmp_path):
    (tmp_path / "kdc.yaml").write_text("samples_per_node: 3\nconcurrency: many\n")
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path, None, {})
    assert exc.value.line == 2 and "concurrency" in exc.value.message
    (tmp_path / "kdc.yaml").write_text("diversity:\n  moods: [happy]\n")
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path, None, {})
    assert exc.value.line == 2


def test_teacher_workers_setting(tmp_path):
    assert load_config(tmp_path, None, {}).teacher_workers is None  # auto
    (tmp_path / "kdc.yaml").write_text("teacher_workers: 3\n")
    assert load_config(tmp_path, None, {}).teacher_workers == 3
    assert load_config(tmp_path, None, {"teacher_workers": 1}).teacher_workers == 1
    (tmp_path / "kdc.yaml").write_text("concurrency: 4\nteacher_workers: 0\n")
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path, None, {})
    assert exc.value.path.endswith("kdc.yaml") and exc.value.line == 2 and "teacher_workers" in exc.value.message
    (tmp_path / "kdc.yaml").write_text("seed: 1\ntop_p: 3\n")  # range errors point at their line too
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path, None, {})
    assert (exc.value.line, exc.value.column) == (2, 8) and "top_p" in exc.value.message
    assert load_config(tmp_path, None, {"top_p": 0.5}).top_p == 0.5  # the command line overrides it


def test_command_line_wins_over_kdc_yaml(tmp_path):
    (tmp_path / "kdc.yaml").write_text("samples_per_node: 3\nseed: 5\napi_base: [http://a:1/v1, http://b:2/v1]\n"
                                       "nodes:\n  x/y: {samples: 9}\ndiversity: {styles: [terse]}\n")
    cfg = load_config(tmp_path, None, {"samples_per_node": 4, "api_base": ()}, trust=True)  # --trust-config
    assert cfg.samples_per_node == 4 and cfg.seed == 5 and cfg.api_base == ["http://a:1/v1", "http://b:2/v1"]
    assert cfg.target("x/y") == 9 and cfg.target("other") == 4 and cfg.attempts_budget("other") == 20
    assert cfg.diversity["styles"] == ["terse"] and len(cfg.diversity["personas"]) > 1
    cfg = load_config(tmp_path, None, {"api_base": ("http://user:pw@c:3/v1",)})  # the command line's: no trust needed
    assert cfg.api_base == ["http://user:pw@c:3/v1"] and cfg.effective()["api_base"] == ["http://***@c:3/v1"]


def test_unknown_nodes_in_kdc_yaml_are_refused(example_taxonomy, tmp_path):
    cfg = load_config(example_taxonomy, None, {})
    cfg.nodes = {"knowledge/no/such/leaf": {"samples": 2}}
    with pytest.raises(KdcError, match="unknown node"):
        make_plan(load_taxonomy(example_taxonomy), cfg)


def test_reasoning_per_kind_and_leaf(tmp_path):
    """Reasoning where it belongs: knowledge, grounded skills and reasoning-like freeform leaves by
    default, never a haiku; kdc.yaml `reasoning:` per kind and `nodes:` per leaf override that."""
    from compiler.config import load_config
    from compiler.compile.plan import reasoning_for
    from compiler.records import Leaf
    from compiler.errors import ConfigError

    def leaf(node_id: str, kind: str) -> Leaf:
        return Leaf(node_id, f"{node_id}/qna.yaml", kind, 3, {}, "")

    haiku, words = leaf("compositional_skills/writing/freeform/haiku", "freeform_skill"), \
        leaf("compositional_skills/reasoning/freeform/word_problems", "freeform_skill")
    know, notes = leaf("knowledge/a/b", "knowledge"), leaf("compositional_skills/grounded/notes", "grounded_skill")
    cfg = load_config(tmp_path, None, {})
    assert [reasoning_for(x, cfg) for x in (haiku, words, know, notes)] == [False, True, True, True]
    (tmp_path / "kdc.yaml").write_text("reasoning: {grounded_skill: false}\nnodes:\n  knowledge/a/b: {reasoning: false}\n"
                                       "  compositional_skills/writing/freeform/haiku: {reasoning: true}\n")
    cfg = load_config(tmp_path, None, {})
    assert [reasoning_for(x, cfg) for x in (haiku, words, know, notes)] == [True, True, False, False]
    (tmp_path / "kdc.yaml").write_text("samples_per_node: 2\nreasoning: sometimes\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, None, {})
    assert err.value.line == 2 and "reasoning must be" in err.value.message


def test_chunk_settings_old_keys(tmp_path):
    """`chunk_tokens` (the old name) still sets the chunk size; `chunk_overlap`, meaningless for
    structured chunks, is a located error rather than silently ignored."""
    (tmp_path / "kdc.yaml").write_text("chunk_tokens: 250\nper_chunk: 2\n")
    cfg = load_config(tmp_path, None, {})
    assert (cfg.chunk_words, cfg.per_chunk) == (250, 2)
    (tmp_path / "kdc.yaml").write_text("seed: 1\nchunk_overlap: 40\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, None, {})
    assert err.value.line == 2 and err.value.column and "chunk_words" in err.value.hint
    (tmp_path / "kdc.yaml").write_text("per_chunk: -1\n")
    with pytest.raises(ConfigError, match="per_chunk must be 0 or more"):
        load_config(tmp_path, None, {})

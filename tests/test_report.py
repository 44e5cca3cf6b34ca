"""Dataset card and HTML report over a hand-built build directory that follows docs/build-layout.md.

`make_build` is also used by tests/test_review.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from compiler.report.card import write_card
from compiler.errors import BuildError
from compiler.io.builddir import load_build
from compiler.report.html import write_report
from compiler.report.stats import node_stats
from build_fixtures import node_entry, write_manifest

HOSTILE = "<script>alert(1)</script>"
HOSTILE_NODE = 'compositional_skills/writing/<img src=x onerror="alert(2)">'

PLOTS = ["taxonomy-tree", "target-vs-accepted", "rejections", "question-lengths", "answer-lengths",
         "grounding-scores", "judge-scores", "diversity", "tokens-cost"]


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _sample(node_id: str, kind: str, i: int, hostile: bool = False) -> dict:
    q = f"Question {i} about {node_id.rsplit('/', 1)[-1]}: what is item {i * 7 % 13} of the list?"
    if hostile and i == 0:
        q = f"What does {HOSTILE} do?"
    steps = [f"Step one for {i}: read the source.", f"Step two: item {i} is {'word ' * (i % 5)}found."]
    ans = f"The answer to {i} is {' '.join(['value'] * (3 + i % 9))}."
    ctx = f"Chunk {i}: a passage about {node_id} with fact number {i}." if kind != "freeform_skill" else None
    sid = _sha(f"{node_id}|{i}")[:24]
    meta = {
        "node_id": node_id, "leaf_path": node_id.split("/"), "kind": kind, "seeds_shown": [i % 5, (i + 1) % 5],
        "template": {"name": f"generate_{kind.split('_')[0]}.j2", "sha256": _sha(kind)},
        "teacher": {"model": "openai/test-teacher",
                    "sampling": {"temperature": 0.7, "top_p": 0.95, "max_tokens": 512, "seed": 7}},
        "prompt_sha256": _sha(f"prompt{i}{node_id}"), "sample_index": i, "attempts": 1 + i % 2,
        "usage": {"prompt_tokens": 300 + i, "completion_tokens": 80 + i},
        "diversity": {"persona": "student", "difficulty": "easy", "style": "concise"},
        "gates": {"judge": {"faithfulness": 3 + i % 3, "relevance": 4, "format": 5}},
    }
    if kind != "freeform_skill":
        meta["gates"]["grounding"] = round(0.5 + (i % 6) / 12, 3)
    if kind == "knowledge":
        meta["document"] = {"repo": "../build/doc-repos/solar", "commit": "a" * 40, "file": "solar.md",
                            "start": 100 * i, "end": 100 * i + 90, "sha256": _sha(str(i))}
    user = q if ctx is None else f"{ctx}\n\n{q}"
    assistant = "\n".join(f"{n + 1}. {s}" for n, s in enumerate(steps)) + f"\n\nAnswer: {ans}"
    return {"id": sid, "node_id": node_id,
            "messages": [{"role": "system", "content": "You are a careful assistant."},
                         {"role": "user", "content": user}, {"role": "assistant", "content": assistant}],
            "record": {"question": q, "reasoning": steps, "answer": ans, "context": ctx},
            "metadata": meta}


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


NODES = {  # node_id: (kind, accepted, target)
    "knowledge/science/astronomy/solar_system": ("knowledge", 40, 40),
    "compositional_skills/writing/freeform/haiku": ("freeform_skill", 12, 15),
    "compositional_skills/extraction/grounded/meeting_action_items": ("grounded_skill", 6, 6),
    "compositional_skills/reasoning/freeform/word_problems": ("freeform_skill", 0, 4),
}


def make_build(root: Path, *, hostile: bool = False, taxonomy: Path | None = None) -> Path:
    """A realistic build directory (docs/build-layout.md); its manifest is made of the real records and
    written by the real writer (compiler/io/builddir.py)."""
    nodes = dict(NODES)
    if hostile:
        nodes[HOSTILE_NODE] = ("freeform_skill", 3, 3)
    manifest_nodes = {}
    mix1, mix2 = [], []
    for k, (node_id, (kind, n, target)) in enumerate(sorted(nodes.items())):
        samples = [_sample(node_id, kind, i, hostile) for i in range(n)]
        rejected = [{"id": _sha(f"rej{node_id}{j}")[:24], "node_id": node_id, "reason": reason,
                     "detail": f"{reason} detail {HOSTILE if hostile else ''}", "raw": "{}", "metadata": {}}
                    for j, reason in enumerate(["dup-near", "schema", "judge", "dup-near"][: 1 + k])]
        evals = [{"node_id": node_id, "question": f"held out {j}", "answer": "a", "context": None,
                  "seed_index": j} for j in range(1 + k % 2)]
        base = root / "nodes" / node_id
        _write_jsonl(base / "train.jsonl", samples)
        _write_jsonl(base / "rejected.jsonl", rejected)
        _write_jsonl(base / "eval.jsonl", evals)
        reasons: dict[str, int] = {}
        for r in rejected:
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
        entry = node_entry(
            node_id, kind, target, n, attempts=n + len(rejected), rejected=reasons, eval_seeds=len(evals),
            tokens={"prompt": sum(s["metadata"]["usage"]["prompt_tokens"] for s in samples),
                    "completion": sum(s["metadata"]["usage"]["completion_tokens"] for s in samples)},
            cost_usd=0.0012 * n,
            diversity={"distinct_1": 0.4 + k / 10, "distinct_2": 0.7 + k / 20, "near_dup_rate": k / 50},
            scores={"grounding": [s["metadata"]["gates"].get("grounding") for s in samples
                                  if "grounding" in s["metadata"]["gates"]],
                    "judge": [sum(s["metadata"]["gates"]["judge"].values()) / 3 for s in samples]},
            lengths={"question_words": [len(s["record"]["question"].split()) for s in samples],
                     "answer_words": [len(s["record"]["answer"].split()) for s in samples]})
        manifest_nodes[node_id] = entry
        rows = [{"messages": s["messages"], "metadata": {"node_id": node_id, "source": "synthetic", "id": s["id"]}}
                for s in samples]
        phase = "phase1_knowledge" if kind == "knowledge" else "phase2_skills"
        if rows:  # like compiler/mix/phases.py: a source file per node, the mix drawn from the sources
            _write_jsonl(root / "mixes" / "sources" / phase / f"{node_id}.jsonl", rows)
        (mix1 if kind == "knowledge" else mix2).extend(rows)
    replay = [{"messages": r["messages"], "metadata": {**r["metadata"], "source": "replay"}} for r in mix1[::2]]
    seeds = [{"messages": [{"role": "user", "content": "seed q"}, {"role": "assistant", "content": "seed a"}],
              "metadata": {"node_id": "compositional_skills/writing/freeform/haiku", "source": "seed",
                           "id": "seed-0"}}]
    _write_jsonl(root / "mixes" / "sources" / "phase2_skills" / "replay_phase1_knowledge.jsonl", replay)
    _write_jsonl(root / "mixes" / "sources" / "phase2_skills" / "seeds.jsonl", seeds)
    mix2 += replay + seeds
    _write_jsonl(root / "mixes" / "phase1_knowledge.jsonl", mix1)
    _write_jsonl(root / "mixes" / "phase2_skills.jsonl", mix2)
    write_manifest(
        root, manifest_nodes,
        {"phase1_knowledge": {"path": "mixes/phase1_knowledge.jsonl", "recipe": "mixes/phase1_knowledge.recipe.yaml",
                              "rows": len(mix1), "by_source": {"synthetic": len(mix1)}},
         "phase2_skills": {"path": "mixes/phase2_skills.jsonl", "recipe": "mixes/phase2_skills.recipe.yaml",
                           "rows": len(mix2), "by_source": {"replay": len(replay), "seed": 1,
                                                            "synthetic": len(mix2) - len(replay) - 1}}},
        taxonomy={"root": str(taxonomy or "/nonexistent/taxonomy"), "content_hash": "c0ffee" + "0" * 58},
        teacher={"model": "openai/test-teacher", "api_bases": ["http://127.0.0.1:9/v1"],
                 "sampling": {"temperature": 0.7, "top_p": 0.95, "max_tokens": 512, "seed": 7}},
        judge={"model": "openai/test-judge", "calls": 0, "why": "--judge"},
        templates={"generate_freeform.j2": _sha("f"), "generate_knowledge.j2": _sha("k")},
        config={"samples_per_node": 40, "seed": 7}, versions={"python": "3.11.9", "litellm": "1.106.2"},
        totals={"target": 0, "accepted": 0, "shortfall": 0, "rejected": 0, "tokens": {"prompt": 1, "completion": 1},
                "cost_usd": 0.0, "teacher_calls": 70, "cache_hits": 0})
    return root


@pytest.fixture
def build(tmp_path: Path) -> Path:
    return make_build(tmp_path / "build")


# ----------------------------------------------------------------------------------------- card


def test_card_names_taxonomy_teacher_templates_counts_and_reasons(build: Path) -> None:
    path = write_card(build)
    assert path == build / "README.md"
    text = path.read_text(encoding="utf-8")
    head, body = text.split("---\n")[1], text.split("---\n", 2)[2]
    import yaml
    meta = yaml.safe_load(head)
    assert meta["task_categories"] == ["text-generation", "question-answering"]
    assert meta["license"] == "other"  # no attribution.txt reachable
    names = [c["config_name"] for c in meta["configs"]]
    assert "knowledge_science_astronomy_solar_system" in names and "mix_phase2_skills" in names
    solar = next(c for c in meta["configs"] if c["config_name"] == "knowledge_science_astronomy_solar_system")
    assert solar["data_files"] == [{"split": "train",
                                    "path": "nodes/knowledge/science/astronomy/solar_system/train.jsonl"}]
    evals = next(c for c in meta["configs"] if c["config_name"] == "eval_seeds")["data_files"]
    assert evals == [{"split": "test", "path": [f"nodes/{n}/eval.jsonl" for n in sorted(NODES)]}]
    assert "c0ffee" + "0" * 58 in body
    prompt = sum(300 + i for _, n, _ in NODES.values() for i in range(n))
    completion = sum(80 + i for _, n, _ in NODES.values() for i in range(n))
    assert f"| teacher tokens | {prompt:,} prompt, {completion:,} completion |" in body
    assert "| teacher cost (USD) | 0.0696 |" in body
    assert "openai/test-teacher" in body and "openai/test-judge" in body
    assert "generate\\_knowledge.j2" in body
    # one row per node with its counts: target | accepted | shortfall | rejected | eval seeds
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in body.splitlines() if line.startswith("| <code>")}
    haiku = rows["<code>compositional\\_skills/writing/freeform/haiku</code>"]
    assert haiku[:6] == ["freeform\\_skill", "15", "12", "3", "3", "1"]
    solar_row = rows["<code>knowledge/science/astronomy/solar\\_system</code>"]
    assert solar_row[:6] == ["knowledge", "40", "40", "0", "4", "2"]
    # every rejection reason with its meaning and total
    assert re.search(r"\| <code>dup-near</code> \| a near duplicate \(MinHash\) \| 5 \|", body)
    assert re.search(r"\| <code>schema</code> \| JSON that broke the record schema \| 3 \|", body)
    assert "metadata.seeds\\_shown" not in body and "`metadata.seeds_shown`" in body  # fields explained
    assert "`metadata.review`" in body and "`metadata.document`" in body


def test_card_reads_license_from_attribution(tmp_path: Path) -> None:
    tax = tmp_path / "tax"
    for node_id in NODES:
        d = tax / node_id
        d.mkdir(parents=True)
        (d / "attribution.txt").write_text("Title of work: x\nLicense of the work: Apache-2.0\nCreator names: y\n")
    build = make_build(tmp_path / "build", taxonomy=tax)
    text = write_card(build).read_text()
    assert "\nlicense: apache-2.0\n" in text
    assert text.count("| Apache-2.0 |") == len(NODES)


def test_card_escapes_hostile_text(tmp_path: Path) -> None:
    build = make_build(tmp_path / "build", hostile=True)
    man = json.loads((build / "manifest.json").read_text())
    man["nodes"]["compositional_skills/writing/freeform/haiku"].update(
        kind=HOSTILE, review={"reviewed": 2, "rejected": 1, "flagged": True}, rejected={HOSTILE: 2})
    man["teacher"] = {"model": HOSTILE, "sampling": {"x": HOSTILE}}
    (build / "manifest.json").write_text(json.dumps(man))
    text = write_card(build).read_text()
    _, head, body = text.split("---\n", 2)
    import yaml
    paths = [f["path"] for c in yaml.safe_load(head)["configs"] for f in c["data_files"] if f["split"] == "train"]
    assert f"nodes/{HOSTILE_NODE}/train.jsonl" in paths  # YAML data, quoted by safe_dump
    assert "<script" not in body and "<img" not in body
    assert "&lt;img src=x onerror=\"alert(2)\"&gt;" in body
    stats = {s.node_id: s for s in node_stats(load_build(build))}
    assert {s.eval_seeds for s in stats.values()} == {1, 2}
    assert stats["compositional_skills/writing/freeform/haiku"].prompt_tokens == sum(300 + i for i in range(12))


def test_manifest_is_checked_once_with_located_errors(tmp_path: Path) -> None:
    """Read once into typed records: another format, a missing key or a wrong type is refused, named."""
    build = make_build(tmp_path / "b")
    path = build / "manifest.json"
    good = path.read_text()
    path.write_text(good.replace('"format": 1', '"format": 2'))
    with pytest.raises(BuildError, match="unknown build format 2") as err:
        load_build(build)
    assert err.value.path == str(path) and err.value.line == 2
    man = json.loads(good)
    del man["nodes"]["compositional_skills/writing/freeform/haiku"]["lengths"]
    path.write_text(json.dumps(man))
    with pytest.raises(BuildError, match="freeform/haiku'? lacks key\\(s\\) lengths"):
        write_report(build)
    man = json.loads(good)
    man["nodes"]["compositional_skills/writing/freeform/haiku"]["accepted"] = "12"
    path.write_text(json.dumps(man))
    with pytest.raises(BuildError, match="`accepted` must be int, not str"):
        write_card(build)
    man = json.loads(good)
    man["surprise"] = 1
    path.write_text(json.dumps(man))
    with pytest.raises(BuildError, match="unknown key\\(s\\) surprise"):
        load_build(build)


def test_missing_or_broken_build_is_a_located_error(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="not a kdc build directory"):
        write_report(tmp_path)
    build = make_build(tmp_path / "b")
    p = build / "nodes/compositional_skills/writing/freeform/haiku/train.jsonl"
    lines = p.read_text().splitlines()
    lines[2] = lines[2][:40]
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(BuildError) as err:
        write_report(build)
    assert err.value.path == str(p) and err.value.line == 3
    man = json.loads((build / "manifest.json").read_text())
    man["nodes"]["../../etc"] = man["nodes"]["compositional_skills/writing/freeform/haiku"]
    (build / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(BuildError, match="bad node id"):
        write_card(build)


# --------------------------------------------------------------------------------------- report


def _figures(html: str) -> dict[str, str]:
    return dict(re.findall(r'<figure class="plot" data-plot="([^"]+)">(.*?)</figure>', html, re.S))


def test_report_has_every_plot_with_marks(build: Path) -> None:
    html = write_report(build).read_text(encoding="utf-8")
    figs = _figures(html)
    assert list(figs) == PLOTS
    for key, body in figs.items():
        assert body.count("<svg") == 1, key
        assert 'class="mark"' in body, key
        assert "no data in this build" not in body, key
    # the tree shows every folder once, leaves with accepted/target
    tree = figs["taxonomy-tree"]
    for folder in ("knowledge/", "science/", "astronomy/", "compositional_skills/", "writing/"):
        assert f">{folder}</text>" in tree
    assert ">12/15 freeform_skill</text>" in tree and ">0/4 freeform_skill</text>" in tree
    # target vs accepted: a bar per node and series, widths proportional to the values
    bars = re.findall(r'width="([\d.]+)" height="9" fill="#0072B2"><title>([^<]+) — accepted',
                      figs["target-vs-accepted"])
    widths = {name: float(w) for w, name in bars}
    assert widths["knowledge/science/astronomy/solar_system"] == pytest.approx(
        widths["compositional_skills/writing/freeform/haiku"] * 40 / 12, rel=0.01)
    assert widths["compositional_skills/reasoning/freeform/word_problems"] == 0
    # rejection reasons stacked per node, with counts in the tooltips
    assert "knowledge/science/astronomy/solar_system — dup-near: 2" in figs["rejections"]
    # histograms count every accepted sample
    assert "(n = 58)" in figs["question-lengths"] and "(n = 58)" in figs["answer-lengths"]
    assert "(n = 46)" in figs["grounding-scores"]  # knowledge 40 + grounded 6
    assert "cost" in figs["tokens-cost"] and "$0.0480" in figs["tokens-cost"]


def test_report_escapes_hostile_text_and_fetches_nothing(tmp_path: Path) -> None:
    build = make_build(tmp_path / "build", hostile=True)
    man = json.loads((build / "manifest.json").read_text())
    node = man["nodes"]["compositional_skills/writing/freeform/haiku"]
    node.update(kind=HOSTILE, review={"reviewed": 2, "rejected": 1, "flagged": True},
                rejected={HOSTILE: 2}, diversity={HOSTILE: 0.5})
    man["teacher"]["model"] = HOSTILE
    man["templates"][HOSTILE] = HOSTILE
    (build / "manifest.json").write_text(json.dumps(man))
    html = write_report(build).read_text(encoding="utf-8")
    assert 'class="flag"' in html
    assert "<script" not in html.lower()
    assert "<img" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "onerror=&quot;alert(2)&quot;" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert "@import" not in html and "url(" not in html
    assert "http://127.0.0.1:9" not in html  # api bases are not shown (they may carry credentials)
    assert "Content-Security-Policy" in html and "default-src 'none'" in html


def test_report_empty_data_and_unknown_price(tmp_path: Path) -> None:
    build = make_build(tmp_path / "build")
    man = json.loads((build / "manifest.json").read_text())
    node = node_entry("compositional_skills/writing/freeform/haiku", "freeform_skill", 3, 0, cost_usd=None,
                      tokens={"prompt": 5, "completion": 1}).to_json()  # a teacher without a known price
    man["nodes"] = {"compositional_skills/writing/freeform/haiku": node}
    man["judge"] = {"model": None, "calls": 0, "why": "off (--no-judge)"}
    (build / "manifest.json").write_text(json.dumps(man))
    (build / "nodes/compositional_skills/writing/freeform/haiku/train.jsonl").write_text("")
    html = write_report(build).read_text()
    figs = _figures(html)
    assert "no data in this build" in figs["grounding-scores"]
    assert "no data in this build" in figs["question-lengths"]
    assert "this build ran without a judge" in figs["judge-scores"]
    assert "6 tok · cost unknown" in figs["tokens-cost"]
    assert "<b>unknown</b><span>cost $</span>" in html
    assert "| teacher cost (USD) | unknown |" in write_card(build).read_text()


def test_report_cli(build: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    r = subprocess.run([sys.executable, "-m", "compiler", "report", str(build)], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (build / "report.html").is_file() and (build / "README.md").is_file()
    assert str(build / "report.html") in r.stdout
    r = subprocess.run([sys.executable, "-m", "compiler", "report", str(build / "nodes")], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 1 and "not a kdc build directory" in r.stderr and "Traceback" not in r.stderr


# -------------------------------------------------------------------------- headless chromium

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

# Runs in the page: for every plot, the SVG's rendered box and its rendered marks.
MEASURE = """
return Array.from(document.querySelectorAll('figure.plot')).map(function (f) {
  var svg = f.querySelector('svg'); var box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
  var marks = svg ? Array.from(svg.querySelectorAll('.mark')) : [];
  var drawn = marks.filter(function (m) { var b = m.getBBox(); return b.width > 0 && b.height > 0; });
  return {plot: f.dataset.plot, width: box.width, height: box.height, marks: marks.length, drawn: drawn.length};
});
"""


def _browser_missing(why: str) -> None:
    """CI sets KDC_REQUIRE_CHROMIUM=1: there a missing browser fails the run instead of skipping."""
    if os.environ.get("KDC_REQUIRE_CHROMIUM") == "1":
        pytest.fail(why)
    pytest.skip(why)


def test_report_renders_in_headless_chromium(tmp_path: Path, repo_root: Path) -> None:
    if not (CHROMIUM and CHROMEDRIVER):
        _browser_missing("needs Debian chromium + chromium-driver (apt-get install -y chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _browser_missing("needs selenium (pip install selenium)")

    build = make_build(tmp_path / "build", hostile=True)
    man = json.loads((build / "manifest.json").read_text())
    man["nodes"]["compositional_skills/writing/freeform/haiku"]["review"] = {"reviewed": 2, "rejected": 2,
                                                                          "flagged": True}
    (build / "manifest.json").write_text(json.dumps(man))
    report = write_report(build)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1500,1200"):
        opts.add_argument(arg)
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager fetch a driver
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        driver.get(report.resolve().as_uri())
        from selenium.common.exceptions import NoAlertPresentException
        try:
            driver.switch_to.alert.dismiss()
            alerted = True  # a hostile node name or question ran script
        except NoAlertPresentException:
            alerted = False
        result = driver.execute_script(MEASURE)
        banner = driver.execute_script("var b = document.querySelector('.flag'); "
                                       "return b ? b.getBoundingClientRect().height : 0")
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1500, min(int(height) + 40, 8000))
        shot = repo_root / "artifacts" / "report.png"
        shot.parent.mkdir(exist_ok=True)
        driver.save_screenshot(str(shot))
        print(f"screenshot: {shot}")
    finally:
        driver.quit()
    assert not alerted
    assert banner > 10  # the flagged node is called out at the top
    assert [r["plot"] for r in result] == PLOTS
    for r in result:
        assert r["width"] > 100 and r["height"] > 20, r
        assert r["marks"] >= 1 and r["drawn"] >= 1, r
    assert shot.stat().st_size > 10_000


def test_card_configs_load_with_hugging_face_datasets(build: Path, tmp_path: Path) -> None:
    import datasets
    write_card(build)
    cache = str(tmp_path / "hf-cache")
    solar = datasets.load_dataset(str(build), "knowledge_science_astronomy_solar_system", cache_dir=cache)
    assert solar["train"].num_rows == 40 and solar["train"][0]["node_id"] == "knowledge/science/astronomy/solar_system"
    evals = datasets.load_dataset(str(build), "eval_seeds", cache_dir=cache)
    assert evals["test"].num_rows == sum(len((build / "nodes" / n / "eval.jsonl").read_text().splitlines())
                                         for n in NODES)
    mix = datasets.load_dataset(str(build), "mix_phase2_skills", cache_dir=cache)
    assert mix["train"].num_rows == len((build / "mixes" / "phase2_skills.jsonl").read_text().splitlines())


def test_compile_wrap_up_writes_what_kdc_report_writes(build: Path) -> None:
    """After a compile the card and report come from the manifest and the first rows of each node
    file only (not a read-back of every row): the same bytes as `kdc report`, which reads it all."""
    from compiler.compile.build import REPORT_EXAMPLES, _after_build

    full = load_build(build)
    assert max(len(rows) for rows in full.train.values()) > REPORT_EXAMPLES  # the head does cut
    assert max(len(rows) for rows in full.rejected.values()) > REPORT_EXAMPLES
    _after_build(build)
    after_compile = (build / "README.md").read_bytes(), (build / "report.html").read_bytes()
    (build / "README.md").unlink()
    (build / "report.html").unlink()
    write_card(build)
    write_report(build)
    assert after_compile == ((build / "README.md").read_bytes(), (build / "report.html").read_bytes())


def test_read_jsonl_head_reads_no_further(tmp_path: Path) -> None:
    from compiler.io.fsutil import read_jsonl

    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n{"a": 3}\nnot json\n', encoding="utf-8")
    assert read_jsonl(path, head=2) == [{"a": 1}, {"a": 2}]
    assert read_jsonl(path, head=3) == [{"a": 1}, {"a": 2}, {"a": 3}]
    assert read_jsonl(path, head=0) == []
    with pytest.raises(BuildError) as err:
        read_jsonl(path)
    assert err.value.line == 5

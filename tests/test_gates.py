"""The gate chain: each gate rejects its own defect with its reason code and passes clean samples;
the counts add up; the decisions are reproducible; the settings are checked."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path

import pytest

from compiler.errors import ConfigError
from compiler.gates.chain import GateConfig, Gatekeeper, support_score
from compiler.records import Record, Sample, Seed
from compiler.taxonomy.tree import load_taxonomy

HAIKU = "compositional_skills/writing/freeform/haiku"
LIMERICK = "compositional_skills/writing/freeform/limerick"  # sibling of HAIKU
PROBLEMS = "compositional_skills/reasoning/freeform/word_problems"  # not a sibling
NOTES = "compositional_skills/extraction/grounded/action_items"
OBJECTIONS = "compositional_skills/sales/freeform/objections"  # prompts are statements
HELM = "compositional_skills/coding/freeform/helm"  # answers hold {{ }}
PLANETS = "knowledge/science/planets"

PLANET_CHUNK = ("Jupiter is the largest planet in the solar system. Its mass is more than twice that of all the "
                "other planets combined. Saturn is known for its bright rings made of ice and rock. Mercury is "
                "the smallest planet and the closest to the Sun.")


def _write(root: Path, node: str, body: str) -> None:
    d = root / node
    d.mkdir(parents=True)
    (d / "qna.yaml").write_text(body, encoding="utf-8")


@pytest.fixture(scope="module")
def taxonomy(tmp_path_factory):
    root = tmp_path_factory.mktemp("tax")
    skill = "version: 3\ncreated_by: t\ntask_description: d\nseed_examples:\n  - question: q\n    answer: a\n"
    for node in (HAIKU, LIMERICK, PROBLEMS, OBJECTIONS, HELM):
        _write(root, node, skill)
    _write(root, NOTES, "version: 3\ncreated_by: t\ntask_description: d\nseed_examples:\n"
                        "  - context: c\n    question: q\n    answer: a\n")
    _write(root, PLANETS, "version: 3\ncreated_by: t\ndomain: astronomy\ndocument_outline: o\n"
                          "document: {repo: r, commit: c, patterns: ['*.md']}\nseed_examples: []\n")
    return load_taxonomy(root)


TRAIN_SEEDS = {
    HAIKU: [Seed("Write a haiku about the morning sea.",
                 "Grey waves fold and break\nsalt wind lifts the white gull's wing\nthe morning tastes of brine"),
            Seed("Write a haiku about a quiet library.",
                 "Pages turn softly\ndust floats in the amber light\nwhispers stay behind")],
    NOTES: [Seed("What are the action items from these notes?", "Priya: send the revised budget (Friday)",
                 "Weekly sync. Priya will send the revised budget to finance by Friday.")],
    PLANETS: [Seed("Which planet is the smallest?", "Mercury is the smallest planet.", PLANET_CHUNK)],
    OBJECTIONS: [Seed("We do not have budget for a new tool this year.",
                      "I understand. Many teams start with the free tier and upgrade once savings show."),
                 Seed("Your product looks too complex for our team.",
                      "It can feel that way at first; most teams are productive after a one-hour session.")],
    HELM: [Seed("Write a Helm template line that sets the image tag from values.",
                "image: {{ .Values.image.repository }}:{{ .Values.image.tag }}")],
}
EVAL_SEEDS = {
    HAIKU: [Seed("Write a haiku about winter snow on pine trees.",
                 "White snow bends the pines\nthe cold forest holds its breath\na crow breaks the hush")],
    NOTES: [Seed("What are the action items from these notes?", "Lena: draft the FAQ page (Wednesday)",
                 "Support review. Lena will draft a FAQ page on password resets by Wednesday.")],
    PLANETS: [Seed("What are the rings of Saturn made of?", "Saturn's rings are made of ice and rock.",
                   PLANET_CHUNK)],
}

_n = 0


def sample(node: str, question: str, answer: str, reasoning=("Think about the task first.",),
           context: str | None = None, kind: str | None = None) -> Sample:
    global _n
    _n += 1
    user = f"{context}\n\n{question}" if context else question
    return Sample(f"s{_n:04d}", node, Record(question, tuple(reasoning), answer, context),
                  [{"role": "system", "content": "You are a helpful assistant."},
                   {"role": "user", "content": user},
                   {"role": "assistant", "content": "\n".join(reasoning) + "\n\n" + answer}],
                  {"kind": kind or ""})


def keeper(taxonomy, **overrides) -> Gatekeeper:
    cfg = GateConfig.from_settings({"gates": overrides})
    return Gatekeeper(cfg, taxonomy, TRAIN_SEEDS, EVAL_SEEDS)


def check(gk: Gatekeeper, s: Sample, **kw):
    return asyncio.run(gk.check(s, **kw))


# ------------------------------------------------------------------ sanity ---------------------------
CLEAN = ("Write a haiku about autumn leaves in the park.",
         "Red leaves drift and fall\nthe park bench waits in the cold\nautumn says goodbye")


def test_clean_sample_is_accepted(taxonomy):
    gk = keeper(taxonomy)
    v = check(gk, sample(HAIKU, *CLEAN))
    assert v.accepted and v.reason is None and v.detail == ""
    assert v.sample.record.answer == CLEAN[1]
    assert gk.stats(HAIKU) == {"checked": 1, "accepted": 1, "pii_redacted": 0, "pii_dropped": 0, "rejected": {}}


@pytest.mark.parametrize("question,answer,reasoning,reason", [
    ("Write a haiku about rain.", "   ", ("step",), "sanity-empty"),
    ("Why?", "Because the sky scatters blue light.", ("step",), "sanity-length"),
    ("Explain it. " * 300, "An answer.", ("step",), "sanity-length"),
    ("Write a haiku about rain.", "word " * 2000, ("step",), "sanity-length"),
    ("The sky is blue and the grass is green.", "Indeed it is.", ("step",), "sanity-question"),
    ("Write a haiku about rain.", "Rain taps on the roof", (), "sanity-reasoning"),
    ("Write a haiku about rain.", "Rain taps on the roof", ("  ",), "sanity-reasoning"),
    ("Write a haiku about {{ topic }}.", "Rain taps on the roof", ("step",), "sanity-markup"),
    ("Write a haiku about rain.", "<|im_start|>assistant\nRain taps", ("step",), "sanity-markup"),
    ("Write a haiku about rain.", "Rain taps on the roof<end_of_turn>", ("step",), "sanity-markup"),
    ("[INST] Write a haiku about rain. [/INST]", "Rain taps on the roof", ("step",), "sanity-markup"),
    ("Write a haiku about rain.", "Rain taps on the roof\nUser: write another one", ("step",), "sanity-markup"),
    ("Write a haiku about rain.", "Rain taps on the roof", ("### Response: think",), "sanity-markup"),
])
def test_sanity_gate_rejects_its_own(taxonomy, question, answer, reasoning, reason):
    gk = keeper(taxonomy)
    v = check(gk, sample(HAIKU, question, answer, reasoning))
    assert (v.accepted, v.reason) == (False, reason), v.detail
    assert v.detail
    assert gk.stats(HAIKU)["rejected"] == {reason: 1}


@pytest.mark.parametrize("question", [
    "Write a haiku about the rain on a tin roof.",  # an instruction, no question mark
    "Given the notes above, list every owner and task.",
    "How many apples are left if Tom eats two of five",  # a question without its mark
    "Summarise the incident report in two sentences.",
])
def test_instructions_count_as_asking(taxonomy, question):
    v = check(keeper(taxonomy), sample(HAIKU, question, "Rain taps on the roof, a soft drum all night long."))
    assert v.accepted, v.detail


def test_a_nodes_own_seeds_set_what_is_normal_there(taxonomy):
    gk = keeper(taxonomy)
    # prompts that are statements are the task in an objection-handling skill ...
    v = check(gk, sample(OBJECTIONS, "We already have a vendor for this and we are happy with them.",
                         "That makes sense; a side-by-side trial costs nothing and shows the difference."))
    assert v.accepted, v.detail
    # ... but junk elsewhere
    v = check(gk, sample(HAIKU, "We already have a vendor for this and we are happy with them.", "Fine."))
    assert v.reason == "sanity-question"
    # {{ }} is the answer's syntax in a Helm skill, leftover template markup in a haiku
    v = check(gk, sample(HELM, "Write a Helm template line that sets the replica count from values.",
                         "replicas: {{ .Values.replicaCount }}"))
    assert v.accepted, v.detail
    v = check(gk, sample(HAIKU, "Write a haiku about the replica count.", "replicas: {{ .Values.replicaCount }}"))
    assert v.reason == "sanity-markup"
    # markup the seeds do not show is still caught in that node
    v = check(gk, sample(HELM, "Write a Helm template line for the port.", "<|im_start|>port: 80"))
    assert v.reason == "sanity-markup"


def test_length_bounds_are_configurable(taxonomy):
    v = check(keeper(taxonomy, min_question_chars=60), sample(HAIKU, *CLEAN))
    assert v.reason == "sanity-length"
    v = check(keeper(taxonomy, max_answer_chars=20), sample(HAIKU, *CLEAN))
    assert v.reason == "sanity-length"


# ------------------------------------------------------------------ dedup ----------------------------
def test_exact_duplicate_up_to_case_and_punctuation(taxonomy):
    gk = keeper(taxonomy)
    first = sample(HAIKU, *CLEAN)
    assert check(gk, first).accepted
    v = check(gk, sample(HAIKU, CLEAN[0].upper(), CLEAN[1].replace("\n", " ; ")))
    assert v.reason == "dup-exact" and first.id in v.detail


def test_near_duplicate_within_a_node(taxonomy):
    gk = keeper(taxonomy)
    first = sample(HAIKU, "Write a haiku about the evening tide coming in over the sand.",
                   "Slow water returns\nfoam erases our footprints\nthe moon pulls it home")
    assert check(gk, first).accepted
    near = sample(HAIKU, "Write a haiku about the evening tide coming in over the beach.",
                  "Slow water returns\nfoam erases our footprints\nthe moon pulls it home")
    v = check(gk, near)
    assert v.reason == "dup-near" and first.id in v.detail and "Jaccard" in v.detail
    different = sample(HAIKU, "Write a haiku about a desert road at noon.",
                       "Heat shimmers on stone\na lizard waits in the shade\nthe road has no end")
    assert check(gk, different).accepted
    assert gk.stats(HAIKU) == {"checked": 3, "accepted": 2, "pii_redacted": 0, "pii_dropped": 0,
                               "rejected": {"dup-near": 1}}


def test_near_dup_threshold_is_configurable(taxonomy):
    a = sample(HAIKU, "Write a haiku about the evening tide coming in over the sand.",
               "Slow water returns\nfoam erases our footprints\nthe moon pulls it home")
    b = sample(HAIKU, "Write a haiku about the evening tide coming in over the beach.",
               "Slow water returns\nfoam erases our footprints\nthe moon pulls it home")
    gk = keeper(taxonomy, near_dup_threshold=0.95)
    assert check(gk, a).accepted and check(gk, b).accepted


def test_duplicates_across_siblings_and_beyond(taxonomy):
    gk = keeper(taxonomy)
    q, a = ("Write a short poem about a cat asleep on a warm windowsill.",
            "The cat on the sill\ncurled in a pool of sunlight\ndreams of slow birds")
    first = sample(HAIKU, q, a)
    assert check(gk, first).accepted
    v = check(gk, sample(LIMERICK, q, a))  # exact copy in a sibling leaf
    assert v.reason == "dup-sibling" and HAIKU in v.detail
    v = check(gk, sample(LIMERICK, q.replace("warm", "sunny"), a))  # near copy in a sibling leaf
    assert v.reason == "dup-sibling" and "Jaccard" in v.detail
    v = check(gk, sample(PROBLEMS, q, a))  # exact copy anywhere else is still a copy
    assert v.reason == "dup-exact" and HAIKU in v.detail
    v = check(gk, sample(PROBLEMS, q.replace("warm", "sunny"), a))  # a near copy in a far leaf is allowed
    assert v.accepted


def test_copies_of_the_nodes_own_seeds(taxonomy):
    gk = keeper(taxonomy)
    seed = TRAIN_SEEDS[HAIKU][0]
    v = check(gk, sample(HAIKU, seed.question, seed.answer))
    assert v.reason == "dup-seed" and "seed 0" in v.detail
    v = check(gk, sample(HAIKU, seed.question.replace("morning", "early"), seed.answer))
    assert v.reason == "dup-seed" and "Jaccard" in v.detail
    # the same text in another leaf is not that leaf's seed
    assert check(gk, sample(PROBLEMS, seed.question, seed.answer)).accepted


def test_contamination_with_held_out_eval_seeds(taxonomy):
    gk = keeper(taxonomy)
    ev = EVAL_SEEDS[HAIKU][0]
    v = check(gk, sample(HAIKU, ev.question, ev.answer))
    assert v.reason == "contaminated" and f"{HAIKU}#eval0" in v.detail
    # another leaf copying it is contamination too: the eval set is global
    assert check(gk, sample(PROBLEMS, ev.question, ev.answer)).reason == "contaminated"
    # the held-out question with a new answer: the student would have seen the question
    v = check(gk, sample(HAIKU, ev.question, "Snow on the pine boughs\nsilence fills the valley\nfoxes leave no sound"))
    assert v.reason == "contaminated" and "question" in v.detail
    # the same generic question over new notes is not contamination for a grounded skill
    ctx = "Office move. Tom will get three quotes from moving companies by 5 August."
    ok = sample(NOTES, EVAL_SEEDS[NOTES][0].question, "Tom: get three quotes from moving companies (5 August)",
                context=ctx)
    assert check(gk, ok, context=ctx).accepted


def test_rejected_samples_do_not_block_later_ones(taxonomy):
    gk = keeper(taxonomy)
    bad = sample(PLANETS, "What is the largest planet in the solar system?",
                 "Neptune, discovered by ancient sailors in 1066.")
    assert check(gk, bad, context=PLANET_CHUNK).reason == "ungrounded"
    good = sample(PLANETS, "What is the largest planet in the solar system?",
                  "Jupiter is the largest planet in the solar system.")
    assert check(gk, good, context=PLANET_CHUNK).accepted


# ------------------------------------------------------------------ grounding ------------------------
def test_grounding_for_knowledge_and_grounded_skills(taxonomy):
    gk = keeper(taxonomy)
    good = sample(PLANETS, "Which planet is the largest, and how heavy is it?",
                  "Jupiter is the largest planet; its mass is more than twice that of all other planets combined.")
    v = check(gk, good, context=PLANET_CHUNK)
    assert v.accepted and v.scores["grounding"] >= 0.9
    bad = sample(PLANETS, "What is Saturn known for?",
                 "Saturn is famous for its purple oceans and seventeen moons made of diamonds.")
    v = check(gk, bad, context=PLANET_CHUNK)
    assert v.reason == "ungrounded" and v.scores["grounding"] < 0.5 and "threshold" in v.detail
    # no context at all: nothing to ground in
    v = check(gk, sample(PLANETS, "What is the hottest planet?", "Venus is the hottest planet."))
    assert v.reason == "ungrounded" and "no context" in v.detail
    # a grounded skill falls back to its record's own context
    ctx = "Hiring meeting. Grace will schedule final interviews by 10 June. HR will prepare offer templates."
    ok = sample(NOTES, "List the action items.", "Grace: schedule final interviews (10 June)", context=ctx)
    assert check(gk, ok).accepted
    ctx2 = "Design review. The team liked the new logo. Priya will order business cards next week."
    made_up = sample(NOTES, "List the action items.", "Bob: repaint the lobby walls orange (tomorrow)", context=ctx2)
    assert check(gk, made_up).reason == "ungrounded"
    # freeform skills have nothing to be grounded in: no grounding score
    v = check(gk, sample(HAIKU, *CLEAN))
    assert v.accepted and "grounding" not in v.scores


def test_grounding_threshold_is_configurable(taxonomy):
    s = sample(PLANETS, "What is Saturn known for?", "Saturn is known for its rings, which look lovely in photos.")
    assert check(keeper(taxonomy, grounding_threshold=0.9), s, context=PLANET_CHUNK).reason == "ungrounded"
    assert check(keeper(taxonomy, grounding_threshold=0.3), s, context=PLANET_CHUNK).accepted


def test_support_score_counts_content_words_and_numbers():
    ctx = "The meeting moved the launch to April. Kenji will write 3 release notes."
    assert support_score("Kenji writes the release notes.", ctx) == 1.0  # stems: writes ~ write
    assert support_score("Kenji is writing notes about the launch.", ctx) == 1.0
    assert support_score("Kenji will write 7 release notes.", ctx) == pytest.approx(4 / 5)
    assert support_score("", ctx) == 1.0


# ------------------------------------------------------------------ PII ------------------------------
def test_pii_is_redacted_everywhere_and_counted(taxonomy):
    gk = keeper(taxonomy)
    s = sample(HAIKU, "Write a haiku for jane.doe@example.org about rain.",
               "Rain taps on the roof\ncall me on +44 20 7946 0958\nthe gutters sing low",
               reasoning=("Jane's address is jane.doe@example.org.",))
    v = check(gk, s)
    assert v.accepted and v.scores["pii_redacted"] == ["email", "phone"]
    rec = v.sample.record
    assert rec.question == "Write a haiku for [EMAIL] about rain."
    assert "[PHONE]" in rec.answer and "7946" not in rec.answer
    assert rec.reasoning == ("Jane's address is [EMAIL].",)
    assert all("jane.doe" not in m["content"] and "7946" not in m["content"] for m in v.sample.messages)
    assert "jane.doe@example.org" in s.record.question  # the caller's sample is not mutated
    assert gk.stats(HAIKU)["pii_redacted"] == 1


def test_pii_redaction_keeps_grounding_intact(taxonomy):
    ctx = "Support review. Lena (lena@corp.example.com) will draft a FAQ page by Wednesday."
    s = sample(NOTES, "List the action items.", "Lena (lena@corp.example.com): draft a FAQ page (Wednesday)",
               context=ctx)
    v = check(keeper(taxonomy), s, context=ctx)
    assert v.accepted and "[EMAIL]" in v.sample.record.answer and "[EMAIL]" in v.sample.record.context


def test_pii_drop_mode(taxonomy):
    gk = keeper(taxonomy, pii="drop")
    v = check(gk, sample(HAIKU, "Write a haiku about rain.", "Rain taps; card 4111 1111 1111 1111 is mine."))
    assert (v.reason, v.detail) == ("pii", "personal data: card")
    assert gk.stats(HAIKU)["pii_dropped"] == 1 and gk.stats(HAIKU)["rejected"] == {"pii": 1}


def test_pii_off_and_kinds(taxonomy):
    text = "Rain taps on the roof, write to rain@example.org now"
    v = check(keeper(taxonomy, pii="off"), sample(HAIKU, "Write a haiku about rain.", text))
    assert v.accepted and v.sample.record.answer == text
    v = check(keeper(taxonomy, pii_kinds=["phone"]), sample(HAIKU, "Write a haiku about rain.", text))
    assert v.accepted and v.sample.record.answer == text


# ------------------------------------------------------------------ confidence -----------------------
def test_teacher_confidence(taxonomy):
    gk = keeper(taxonomy, min_mean_logprob=-1.5)
    v = check(gk, sample(HAIKU, *CLEAN), logprobs=[-0.2, -3.5, -2.9])
    assert v.reason == "low-confidence" and v.scores["confidence"] == pytest.approx(-2.2)
    v = check(gk, sample(HAIKU, *CLEAN), logprobs=[-0.2, -0.4])
    assert v.accepted and v.scores["confidence"] == pytest.approx(-0.3)
    v = check(keeper(taxonomy), sample(HAIKU, "Write a haiku about a quiet harbour.", "Boats rest on still water"),
              logprobs=[-5.0])
    assert v.accepted  # no threshold configured: the score is recorded, nothing is rejected
    v = check(gk, sample(HAIKU, "Write a haiku about rain in April.", "Soft April rain falls"))
    assert v.accepted and "confidence" not in v.scores  # no logprobs: gate not applied


# ------------------------------------------------------------------ planted defects ------------------
def test_each_gate_catches_exactly_its_planted_defects(taxonomy):
    """A stream with known counts of each defect: every gate catches its own and nothing else, and
    checked = accepted + all rejections."""
    rng = random.Random(3)
    topics = ["river", "lantern", "orchard", "glacier", "harbor", "meadow", "cathedral", "volcano", "bakery",
              "lighthouse", "canyon", "market", "library", "vineyard", "tundra", "subway", "garden", "bridge",
              "festival", "island", "forest", "airport", "desert", "factory"]
    moods = ["quiet", "stormy", "golden", "broken", "ancient", "sleepy", "crowded", "frozen"]
    stream = []
    for i, topic in enumerate(topics):
        mood = moods[i % len(moods)]
        q = f"Write a haiku about a {mood} {topic} at dusk."
        weather = rng.choice(["light", "wind", "rain"])
        a = f"The {mood} {topic}\n{weather} settles over {topic} stones\nnight folds {i} wings"
        stream.append((sample(HAIKU, q, a), None, "accepted"))
    extra = [
        (sample(HAIKU, TRAIN_SEEDS[HAIKU][1].question, TRAIN_SEEDS[HAIKU][1].answer), None, "dup-seed"),
        (sample(HAIKU, EVAL_SEEDS[HAIKU][0].question, EVAL_SEEDS[HAIKU][0].answer), None, "contaminated"),
        (sample(HAIKU, "Write a haiku about rain.", ""), None, "sanity-empty"),
        (sample(HAIKU, "Write a haiku about {{ topic }}.", "Rain"), None, "sanity-markup"),
        (sample(HAIKU, "Write a haiku about rain.", "card 4111 1111 1111 1111"), None, "pii"),
        (sample(PLANETS, "What is Saturn known for?", "Saturn is known for purple oceans of diamonds."),
         PLANET_CHUNK, "ungrounded"),
    ]
    stream += extra
    # duplicates of accepted ones: exact and near
    stream.append((sample(HAIKU, stream[0][0].record.question, stream[0][0].record.answer), None, "dup-exact"))
    q1, a1 = stream[1][0].record.question, stream[1][0].record.answer
    stream.append((sample(HAIKU, q1.replace("at dusk", "at sunset"), a1), None, "dup-near"))
    stream.append((sample(LIMERICK, stream[2][0].record.question, stream[2][0].record.answer), None, "dup-sibling"))
    gk = keeper(taxonomy, pii="drop")
    got, want = Counter(), Counter()
    for s, ctx, expected in stream:
        v = asyncio.run(gk.check(s, context=ctx))
        got[v.reason or "accepted"] += 1
        want[expected] += 1
        assert (v.reason or "accepted") == expected, (expected, v.reason, v.detail)
    assert got == want
    total = {"checked": 0, "accepted": 0}
    rejected = Counter()
    for node in (HAIKU, LIMERICK, PLANETS):
        st = gk.stats(node)
        total["checked"] += st["checked"]
        total["accepted"] += st["accepted"]
        rejected.update(st["rejected"])
        assert st["checked"] == st["accepted"] + sum(st["rejected"].values())
    assert total == {"checked": len(stream), "accepted": want["accepted"]}
    assert rejected == Counter({k: v for k, v in want.items() if k != "accepted"})


def test_decisions_are_reproducible(taxonomy):
    rng = random.Random(11)
    words = "amber basalt cedar delta ember fjord granite harbor iris juniper kelp lantern meadow".split()
    stream = []
    for i in range(60):
        if i % 4 == 3:  # every fourth: an earlier one with one word changed
            prev = stream[rng.randrange(len(stream))].record
            toks = prev.answer.split()
            toks[rng.randrange(len(toks))] = rng.choice(words)
            stream.append(sample(HAIKU, prev.question, " ".join(toks)))
            continue
        q = "Write a haiku about " + " ".join(rng.choice(words) for _ in range(4)) + "."
        a = " ".join(rng.choice(words) for _ in range(9))
        stream.append(sample(HAIKU, q, a))
    runs = []
    for _ in range(2):
        gk = keeper(taxonomy)
        runs.append([(v.reason, v.detail) for v in (check(gk, s) for s in stream)])
    assert runs[0] == runs[1]
    assert any(r for r, _ in runs[0]) and any(r is None for r, _ in runs[0])  # both outcomes occur


# ------------------------------------------------------------------ settings -------------------------
def test_settings_defaults_and_overrides():
    cfg = GateConfig.from_settings({})
    assert cfg == GateConfig()
    assert cfg.pii == "redact" and cfg.judge is None and cfg.min_mean_logprob is None
    cfg = GateConfig.from_settings({"seed": 7, "gates": {"near_dup_threshold": 0.8, "pii": "drop",
                                                         "judge": "openai/gpt-4o-mini",
                                                         "judge_thresholds": {"format": 4}}})
    assert cfg.near_dup_threshold == 0.8 and cfg.pii == "drop" and cfg.judge == "openai/gpt-4o-mini"
    assert cfg.judge_thresholds == {"faithfulness": 3, "relevance": 3, "format": 4, "standalone": 3}
    assert GateConfig.from_settings({"gates": {"judge": "a/b"}}, judge="c/d").judge == "c/d"
    assert GateConfig.from_settings({}, judge="c/d").judge == "c/d"
    d = cfg.to_dict()
    assert d["judge"] == "openai/gpt-4o-mini" and d["pii_kinds"] == list(cfg.pii_kinds)


@pytest.mark.parametrize("gates,fragment", [
    ({"near_dup": 0.8}, "unknown gates setting"),
    ({"near_dup_threshold": 1.5}, "between 0 and 1"),
    ({"near_dup_threshold": "high"}, "must be a number"),
    ({"min_question_chars": 2.5}, "must be an integer"),
    ({"pii": "mask"}, "redact, drop or off"),
    ({"pii_kinds": ["email", "passport"]}, "unknown kind"),
    ({"judge_thresholds": {"style": 3}}, "unknown rubric"),
    ({"judge_thresholds": {"format": 9}}, "from 1 to 5"),
    ({"judge": 5}, "must be a string"),
])
def test_bad_settings_are_config_errors(gates, fragment):
    with pytest.raises(ConfigError) as err:
        GateConfig.from_settings({"gates": gates})
    assert fragment in err.value.message


def test_gates_section_must_be_a_mapping():
    with pytest.raises(ConfigError):
        GateConfig.from_settings({"gates": ["near_dup_threshold"]})


# ------------------------------------------------------------------ near-dup index and diversity -----
def test_near_index_finds_close_copies_and_only_those():
    from compiler.gates.diversity import Fingerprint, NearIndex, jaccard

    rng = random.Random(5)
    vocab = [f"{a}{b}{c}" for a in "bdfgklmnprst" for b in "aeiou" for c in "lnrst"]
    base = [[rng.choice(vocab) for _ in range(40)] for _ in range(300)]
    index = NearIndex(0.6)
    for i, toks in enumerate(base):
        index.add(i, Fingerprint.of(" ".join(toks)))
    close = far = 0
    for i, toks in enumerate(base[:150]):
        near = list(toks)
        for j in rng.sample(range(40), 2):  # two words changed: Jaccard ~0.8
            near[j] = rng.choice(vocab)
        fp = Fingerprint.of(" ".join(near))
        assert jaccard(fp.shingles, Fingerprint.of(" ".join(toks)).shingles) >= 0.7
        found = index.matches(fp)
        close += bool(found) and found[0][0] == i
        other = list(toks)
        for j in rng.sample(range(40), 16):  # sixteen changed: Jaccard well under 0.6
            other[j] = rng.choice(vocab)
        hits = index.matches(Fingerprint.of(" ".join(other)))
        far += bool(hits)
        assert all(sim >= 0.6 for _, sim in hits)  # confirmed by exact Jaccard: never under the threshold
    assert close == 150 and far == 0


def test_node_diversity_figures():
    from compiler.gates.diversity import node_diversity

    def s(q, a):
        return sample(HAIKU, q, a)

    same = [s("Write a haiku about rain.", "Rain taps on the roof"),
            s("Write a haiku about rain.", "Rain taps on the roof")]
    d = node_diversity(same)
    # 10 words each (question 5 + answer 5), 9 distinct in all ("rain" twice); 8 bigrams each, 8 distinct
    assert d == {"distinct_1": round(9 / 20, 4), "distinct_2": round(8 / 16, 4), "near_dup_rate": 1.0}
    varied = [s("Write a haiku about rain.", "Rain taps on the roof"),
              s("Describe a desert at noon.", "Heat shimmers over stone")]
    d = node_diversity(varied)
    assert d["near_dup_rate"] == 0.0 and d["distinct_1"] > 0.8 and d["distinct_2"] == 1.0
    assert node_diversity([]) == {"distinct_1": 0.0, "distinct_2": 0.0, "near_dup_rate": 0.0}


@pytest.mark.parametrize("node,kind", [(PROBLEMS, "freeform_skill"), (NOTES, "grounded_skill")])
def test_node_diversity_trusts_the_dedup_gate_only_where_it_ran_the_same_search(taxonomy, node, kind):
    """The manifest's near-duplicate rate skips its own index when the dedup gate vouches for the
    accepted samples: the figures must then equal the full computation, on a stream full of near
    copies; an edit accepted in review, another kind or another gate threshold recomputes."""
    from compiler.gates.diversity import gate_vouches, node_diversity

    rng = random.Random(7)
    vocab = [f"w{i}" for i in range(60)]
    bases = [[rng.choice(vocab) for _ in range(24)] for _ in range(12)]
    gk = keeper(taxonomy, pii="off")
    accepted, reasons = [], Counter()
    for i in range(300):
        toks = list(rng.choice(bases))
        for j in rng.sample(range(24), rng.randint(0, 12)):  # 0..12 words changed: many near copies
            toks[j] = rng.choice(vocab)
        ctx = f"Meeting notes {i % 3}: " + " ".join(toks[8:]) if kind == "grounded_skill" else None
        s = sample(node, f"Question {' '.join(toks[:8])}?", " ".join(toks[8:]), context=ctx, kind=kind)
        v = asyncio.run(gk.check(s, context=ctx))
        reasons[v.reason or "accepted"] += 1
        if v.accepted:
            accepted.append(v.sample)
    assert reasons["dup-near"] > 20 and len(accepted) > 20  # the stream did exercise the gate
    assert gate_vouches(accepted, kind, 0.6, 64)
    full = node_diversity(accepted)
    assert node_diversity(accepted, dedup_gated=True) == full and full["near_dup_rate"] == 0.0
    assert not gate_vouches(accepted, kind, 0.7, 64) and not gate_vouches(accepted, kind, 0.6, 128)
    assert not gate_vouches(accepted, "knowledge", 0.6, 64)
    copy = Sample("edited", node, accepted[0].record, accepted[0].messages,
                  {**accepted[0].metadata, "review": {"verdict": "edit"}})  # taken as written, past the gate
    assert not gate_vouches(accepted + [copy], kind, 0.6, 64)
    assert node_diversity(accepted + [copy])["near_dup_rate"] > 0.0


def test_lsh_bands_of_the_default_gates_are_datasketchs_own():
    """The (bands, rows) kdc gives datasketch for the default gates, so that scipy is not imported
    to compute them, are those datasketch's optimisation picks (a datasketch upgrade would show)."""
    from datasketch.lsh import _optimal_param

    from compiler.gates.diversity import KNOWN_LSH_PARAMS, NEAR_DUP_THRESHOLD, NUM_PERM, NearIndex

    assert (round(NEAR_DUP_THRESHOLD - 0.2, 4), NUM_PERM) in KNOWN_LSH_PARAMS
    for (threshold, num_perm), params in KNOWN_LSH_PARAMS.items():
        assert _optimal_param(threshold, num_perm, 0.5, 0.5) == params
    index = NearIndex()
    assert (index._lsh.b, index._lsh.r) == KNOWN_LSH_PARAMS[(0.4, 64)]


def test_gates_load_without_scipy_and_other_thresholds_still_get_it(tmp_path):
    """Importing the gates leaves scipy out (start-up); a non-default threshold still gets
    datasketch's optimisation, through the real scipy, on first use."""
    import subprocess
    import sys

    code = ("import sys; from compiler import minhash; minhash.permutations(64);"  # a cold cache: from datasketch
            "import compiler.gates.chain as c; from compiler.gates.diversity import NearIndex;"
            "NearIndex(); assert 'scipy.integrate' not in sys.modules, 'scipy at import';"
            "i = NearIndex(0.8); from datasketch.lsh import _optimal_param;"
            "assert (i._lsh.b, i._lsh.r) == _optimal_param(0.6, 64, 0.5, 0.5);"
            "assert 'scipy.integrate' in sys.modules and hasattr(sys.modules['scipy.integrate'], 'romb'); print('ok')")
    import os

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=str(Path(__file__).resolve().parent.parent),
                         env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    assert list((tmp_path / "cache").rglob("*.npy")), "the permutations were not computed and cached"

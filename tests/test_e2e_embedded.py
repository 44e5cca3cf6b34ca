"""The whole embedded stack on CPU, through the CLI: compile the example taxonomy with the embedded
teacher (quota 1), train the embedded Gemma 3 270M student with LoRA for a few steps per phase, reload
the result, generate, and evaluate base vs tuned on the held-out seeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def kdc(*args: str, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "compiler", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT)
    assert proc.returncode == 0, f"kdc {args[0]} failed:\n{proc.stderr[-4000:]}"
    assert "Traceback" not in proc.stderr
    return proc


@pytest.mark.slow
def test_embedded_compile_train_reload_generate_eval(example_taxonomy, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "PYTHONPATH": str(ROOT),
           "LITELLM_LOCAL_MODEL_COST_MAP": "True", "COLUMNS": "200"}
    build, run = tmp_path / "build", tmp_path / "run"

    # the example's settings, with the knowledge mix capped: the training below runs one row per step
    config = tmp_path / "kdc.yaml"
    config.write_text((example_taxonomy / "kdc.yaml").read_text() + "\nmix: {per_node_cap: 4}\n")
    kdc("compile", str(example_taxonomy), "--out", str(build), "--samples-per-node", "1", "--config", str(config),
        "--quiet", env=env)
    manifest = json.loads((build / "manifest.json").read_text())
    assert manifest["mixes"]["phase1_knowledge"]["rows"] > 0 and manifest["mixes"]["phase2_skills"]["rows"] > 0

    # one row per step, unpacked: epoch 2 revisits epoch 1's rows, so its mean loss must be lower
    r1 = manifest["mixes"]["phase1_knowledge"]["rows"]
    assert r1 <= 8  # two knowledge leaves, capped at 4 rows each (RAFT rows run to ~1,600 tokens)
    trained = kdc("train", str(build), "--out", str(run), "--max-steps", str(2 * r1), "--max-length", "2048",
                  "--no-packing", "--batch-size", "1", "--grad-accum", "1", env=env)
    assert "model: " in trained.stdout
    result = json.loads((run / "train_result.json").read_text())
    p1, p2 = result["phases"]
    assert p1["global_step"] == p2["global_step"] == 2 * r1 and p1["truncated_rows"] == 0
    losses = [v for _step, v in p1["losses"]]
    assert sum(losses[r1:]) / r1 < sum(losses[:r1]) / r1, p1["losses"]
    assert p2["start_model"] == p1["model_dir"] and p2["start_fingerprint"] == p1["end_fingerprint"]
    assert result["chat_template"] == "gemma3" and result["final"] == "phase2/model"
    card = (run / "phase2" / "model" / "README.md").read_text()
    assert result["manifest"]["sha256"] in card and manifest["taxonomy"]["content_hash"] in card

    # the artifact reloads with plain transformers and answers in the chat template it was trained with
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    final = run / result["final"]
    tok = AutoTokenizer.from_pretrained(final)
    model = AutoModelForCausalLM.from_pretrained(final, dtype=torch.float32)
    assert type(model).__name__ == "Gemma3ForCausalLM" and getattr(model.config, "quantization_config", None) is None
    enc = tok.apply_chat_template([{"role": "user", "content": "What is a commit in git?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    assert tok.decode(enc["input_ids"][0]).endswith("<start_of_turn>model\n")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > enc["input_ids"].shape[1]
    del model

    report_path = tmp_path / "eval.json"
    shown = kdc("eval", str(build), "--model", str(run), "--max-new-tokens", "24", "--limit", "1",
                "--out", str(report_path), env=env)
    report = json.loads(report_path.read_text())
    assert [n["node_id"] for n in report["nodes"]] == sorted(manifest["nodes"])
    for node in report["nodes"]:
        assert node["n"] == 1 and node["node_id"] in shown.stdout
        for label in ("tuned", "base"):
            assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in node[label].values())
    assert report["base"].endswith("gemma3-270m") and report["overall"]["nodes"] == len(manifest["nodes"])

"""`fastft push`: the exact files staged for the Hub, the model card written from the run folder, and the one-line
refusals (no token, offline). Nothing here reaches the network."""
import importlib.metadata
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from click.testing import CliRunner

from fastft.cli import main
from fastft.config.loader import load_recipe
from fastft.runtime.outputs import recipe_yaml
from tests.factories import REPO, SAMPLE_DEV, recipe_for, tiny_llama_checkpoint

METRICS = {"eval_loss_before": 6.41318, "eval_loss_after": 5.123456, "train_loss": 5.9, "train_tokens_per_s": 288.49,
           "peak_memory_gib": 0.71, "peak_memory_kind": "rss", "fine_tuned": {"rouge1": 0.3125, "rouge_sum": 0.875}}
STATS = {"train": {"examples": 40, "tokens": 9600, "trained_tokens": 1920, "path": str(SAMPLE_DEV)}}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder as `fastft run` leaves it: adapter, resolved recipe, metrics.json, data statistics."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("push")
    base = tiny_llama_checkpoint(root / "base")
    run = root / "outputs" / "tiny"
    adapter = run / "final_model"
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), config).save_pretrained(adapter)
    AutoTokenizer.from_pretrained(base).save_pretrained(adapter)
    torch.save({"not": "a model file"}, adapter / "training_args.bin")
    (run / "resolved_recipe.yaml").write_text(recipe_yaml(load_recipe(recipe_for(root, base))), encoding="utf-8")
    (run / "metrics.json").write_text(json.dumps(METRICS), encoding="utf-8")
    (run / "data_stats.json").write_text(json.dumps(STATS), encoding="utf-8")
    return run


def push(*args, env=None):
    return CliRunner().invoke(main, ["push", "--repo", "me/tiny", *map(str, args)], env=env)


def card_of(staging):
    text = (staging / "README.md").read_text(encoding="utf-8")
    front, body = text.split("---\n")[1:3]
    return yaml.safe_load(front), body


def test_adapter_staging_holds_the_adapter_the_run_record_and_a_card(run_dir, tmp_path):
    adapter, staging = run_dir / "final_model", tmp_path / "stage"
    result = push("--adapter", adapter, "--staging", staging, "--dry-run")
    assert result.exit_code == 0, result.output

    model_files = {p.name for p in adapter.iterdir()} - {"training_args.bin", "README.md"}
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json"} <= model_files
    assert {p.name for p in staging.iterdir()} == model_files | {"resolved_recipe.yaml", "metrics.json", "README.md"}
    for name in model_files:
        assert (staging / name).read_bytes() == (adapter / name).read_bytes()
    assert f"staged in {staging}: " in result.output

    front, body = card_of(staging)
    base = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert front == {"base_model": base, "library_name": "peft", "tags": ["fastft", "lora", "adapter"]}
    assert f"fastft {importlib.metadata.version('fastft')}" in body and "LoRA rank 16" in body
    for value in (METRICS["eval_loss_after"], METRICS["fine_tuned"]["rouge_sum"], METRICS["train_tokens_per_s"]):
        assert f"{value:.4g}" in body
    assert "9,600" in body and str(SAMPLE_DEV) in body  # the data statistics
    assert "hand-written for fastft" in body
    assert (run_dir / "resolved_recipe.yaml").read_text(encoding="utf-8").rstrip() in body


def test_the_runs_own_staging_folder_is_staged_afresh(run_dir):
    adapter = run_dir / "final_model"
    for _ in range(2):
        assert push("--adapter", adapter, "--dry-run").exit_code == 0
    assert (run_dir / "hub" / "adapter_model.safetensors").is_file()


def test_merged_and_gguf_uploads_stage_their_own_files(run_dir, tmp_path):
    from gguf import GGUFWriter

    merged = tmp_path / "merged"
    merged.mkdir()
    (merged / "config.json").write_text("{}", encoding="utf-8")
    (merged / "model.safetensors").write_bytes(b"weights")
    result = push("--adapter", run_dir / "final_model", "--merged", merged, "--staging", tmp_path / "m", "--dry-run")
    assert result.exit_code == 0, result.output
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"config.json", "model.safetensors", "resolved_recipe.yaml", "metrics.json", "README.md"}
    assert card_of(tmp_path / "m")[0]["library_name"] == "transformers"

    gguf = tmp_path / "tiny.gguf"
    writer = GGUFWriter(str(gguf), "llama")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    result = push("--adapter", run_dir / "final_model", "--gguf", gguf, "--staging", tmp_path / "g", "--dry-run")
    assert result.exit_code == 0, result.output
    assert {p.name for p in (tmp_path / "g").iterdir()} == {"tiny.gguf", "resolved_recipe.yaml", "metrics.json", "README.md"}
    assert (tmp_path / "g" / "tiny.gguf").read_bytes() == gguf.read_bytes()
    front, body = card_of(tmp_path / "g")
    assert front["library_name"] == "gguf" and "tiny.gguf" in body


@pytest.mark.parametrize("extra, message", [
    (["--gguf", REPO / "setup.py"], "fastft error {repo}/setup.py: not a GGUF file\n  fix: pass the file `fastft export --gguf` wrote"),
    (["--gguf", REPO / "setup.py", "--merged", REPO], "fastft error --merged and --gguf name two different uploads\n  fix: push one of them at a time"),
    (["--merged", REPO / "data"], "fastft error {repo}/data: no config.json: this is not a merged checkpoint\n  fix: pass the --out folder of `fastft merge`"),
    (["--staging", REPO / "data"], "fastft error {repo}/data: the staging folder is not empty\n  fix: name a new or empty folder"),
])
def test_refusals(run_dir, extra, message):
    result = push("--adapter", run_dir / "final_model", "--dry-run", *extra)
    assert result.exit_code == 2 and message.format(repo=REPO) in result.output, result.output


def push_process(run_dir, tmp_path, **env):
    """In a process of its own: huggingface_hub reads HF_HOME and HF_HUB_OFFLINE once, at import."""
    env = {**{k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE")},
           "HF_HOME": str(tmp_path / "hf"), **env}
    staging = tmp_path / "stage"
    command = [sys.executable, "-m", "fastft", "push", "--adapter", str(run_dir / "final_model"), "--repo", "me/tiny",
               "--staging", str(staging)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert (staging / "README.md").is_file()
    return result.stderr, staging


def test_without_a_token_nothing_is_sent(run_dir, tmp_path):
    err, staging = push_process(run_dir, tmp_path)
    assert ("fastft error me/tiny: no Hugging Face token: the Hub takes uploads from logged-in users only\n"
            f"  fix: run `hf auth login` or set HF_TOKEN; the files are staged in {staging}\n") in err


def test_offline_the_upload_says_so_in_one_line(run_dir, tmp_path):
    err, staging = push_process(run_dir, tmp_path, HF_HUB_OFFLINE="1", HF_TOKEN="hf_not_a_real_token")
    assert ("fastft error me/tiny: cannot upload to the Hugging Face Hub (OfflineModeIsEnabled: Cannot reach "
            "https://huggingface.co/api/repos/create: offline mode is enabled.") in err
    assert f"  fix: check the network (and unset HF_HUB_OFFLINE); the files are staged in {staging}\n" in err

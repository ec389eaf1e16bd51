"""A short, real training run through the CLI on a tiny randomly initialised Llama built here."""
import json

import pytest
import torch
from click.testing import CliRunner

from fastft.cli import main
from tests.factories import recipe_for, tiny_llama_checkpoint


def test_cli_run_trains_saves_and_lowers_eval_loss(tmp_path, tiny_llama):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result = CliRunner().invoke(main, ["run", str(recipe_for(tmp_path, tiny_llama)), "--set", "dataset.max_train_samples=24", "--set", "dataset.max_eval_samples=8"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "outputs" / "tiny"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval_loss_after"] < metrics["eval_loss_before"]
    # Training ends on the best checkpoint (tests/test_resume.py checks the weights): its eval loss, not the last one.
    epoch_losses = [e["eval_loss"] for e in json.loads((out / "log_history.json").read_text()) if "eval_loss" in e and e["step"] > 0]
    assert len(epoch_losses) == 2 and metrics["eval_loss_after"] == min(epoch_losses)
    assert (out / "resolved_recipe.yaml").read_text().count("max_train_samples: 24") == 1
    logs = list((tmp_path / "logs").glob("*/train/train_tiny_*.log"))
    assert len(logs) == 1 and "eval loss after training" in logs[0].read_text(encoding="utf-8")

    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    adapted = PeftModel.from_pretrained(base, out / "final_model")
    ids = torch.tensor([[1, 5, 9, 30]])
    assert not torch.allclose(adapted(ids).logits, AutoModelForCausalLM.from_pretrained(tiny_llama)(ids).logits)


def test_cli_bad_data_column_exits_2_and_writes_nothing(tmp_path, tiny_llama):
    result = CliRunner().invoke(main, ["run", str(recipe_for(tmp_path, tiny_llama, "")), "--set", "dataset.columns={dialogue: dialog}"])
    assert result.exit_code == 2
    assert "lacks column(s) 'dialog' -> did you mean 'dialogue'?" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "logs").exists()


def test_cli_qlora_run_on_cpu(tmp_path, tiny_llama):
    """4-bit NF4 base + LoRA through bitsandbytes on the CPU: trains and saves an adapter."""
    result = CliRunner().invoke(main, [
        "run", str(recipe_for(tmp_path, tiny_llama)), "--use-qlora", "--set", "qlora.compute_dtype=float32",
        "--set", "dataset.max_train_samples=8", "--set", "dataset.max_eval_samples=4", "--set", "training.epochs=1",
    ])
    assert result.exit_code == 0, result.output
    assert "QLoRA nf4" in result.output
    assert (tmp_path / "outputs" / "tiny" / "final_model" / "adapter_model.safetensors").exists()


def test_loss_kernel_off_gives_the_same_eval_loss_through_the_plain_path(tmp_path, tiny_llama):
    """kernels.loss: false runs transformers' own full-logits loss; before training both must agree."""
    losses = {}
    for fused in ("true", "false"):
        folder = tmp_path / fused
        folder.mkdir()
        result = CliRunner().invoke(main, [
            "run", str(recipe_for(folder, tiny_llama)), "--set", f"kernels.loss={fused}", "--set", "training.epochs=1",
            "--set", "dataset.max_train_samples=8", "--set", "dataset.max_eval_samples=8",
        ])
        assert result.exit_code == 0, result.output
        losses[fused] = json.loads((folder / "outputs" / "tiny" / "metrics.json").read_text())["eval_loss_before"]
    assert losses["true"] == pytest.approx(losses["false"], rel=1e-5)


def test_existing_output_is_never_overwritten_silently_and_resume_continues(tmp_path, tiny_llama):
    recipe = str(recipe_for(tmp_path, tiny_llama))
    small = ["--set", "dataset.max_train_samples=8", "--set", "dataset.max_eval_samples=4", "--set", "training.epochs=1"]
    first = CliRunner().invoke(main, ["run", recipe, *small])
    assert first.exit_code == 0, first.output
    adapter = tmp_path / "outputs" / "tiny" / "final_model" / "adapter_model.safetensors"
    before = adapter.read_bytes()

    again = CliRunner().invoke(main, ["run", recipe, *small])
    assert again.exit_code == 2
    assert "already holds a run" in again.output and "--resume" in again.output and "--overwrite" in again.output
    assert adapter.read_bytes() == before

    changed = CliRunner().invoke(main, ["run", recipe, *small, "--set", "training.learning_rate=0.1", "--resume"])
    assert changed.exit_code == 2 and "the recipe differs" in changed.output

    both = CliRunner().invoke(main, ["run", recipe, *small, "--resume", "--overwrite"])
    assert both.exit_code == 2 and "contradict" in both.output

    resumed = CliRunner().invoke(main, ["run", recipe, *small, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "resuming from" in resumed.output and "checkpoint-" in resumed.output
    assert len(list((tmp_path / "outputs" / "tiny" / "attempts").glob("*_resolved_recipe.yaml"))) >= 1

    fresh = CliRunner().invoke(main, ["run", recipe, *small, "--overwrite"])
    assert fresh.exit_code == 0, fresh.output


def test_added_chat_tokens_are_trained_and_saved_with_the_adapter(tmp_path):
    """A tokenizer without any chat markers gets ChatML's tokens; their embedding rows must reload trained."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.factories import tiny_bpe_tokenizer

    model_dir = tiny_llama_checkpoint(tmp_path / "plain", tiny_bpe_tokenizer(specials=["<s>", "</s>"]))
    result = CliRunner().invoke(main, ["run", str(recipe_for(tmp_path, model_dir)), "--set", "dataset.max_train_samples=8",
                                       "--set", "dataset.max_eval_samples=4", "--set", "training.epochs=1"])
    assert result.exit_code == 0, result.output
    final = tmp_path / "outputs" / "tiny" / "final_model"
    tokenizer = AutoTokenizer.from_pretrained(final)
    new_ids = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    assert min(new_ids) >= AutoTokenizer.from_pretrained(model_dir).vocab_size
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    base.resize_token_embeddings(len(tokenizer))
    untrained = base.get_input_embeddings().weight[new_ids].detach().clone()
    fresh_head = base.get_output_embeddings().weight[new_ids].detach().clone()  # random rows of this process's resize
    merged = PeftModel.from_pretrained(base, final).merge_and_unload()
    assert not torch.allclose(merged.get_input_embeddings().weight[new_ids], untrained)
    # The untied head's new rows come from the training run's resize, saved with the adapter, not from ours.
    assert not torch.allclose(merged.get_output_embeddings().weight[new_ids], fresh_head)

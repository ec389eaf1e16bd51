"""Training guards: a batch without trained tokens is skipped and counted; a non-finite loss or gradient stops the
run; running out of GPU memory ends with the settings that size a batch."""
import pytest
import torch
from click.testing import CliRunner
from datasets import Dataset

import fastft.training.build
from fastft.cli import main
from fastft.config.loader import load_recipe
from fastft.errors import FastftError
from tests.factories import fastft_trainer, recipe_for


def records(vocab: int, masked_ids=(), good: int = 3):
    """Rows of 10, 12, 14, ... tokens, the second half of each trained; `masked_ids` rows train nothing."""
    g = torch.Generator().manual_seed(0)
    rows = []
    for i, name in enumerate([*(f"good-{k}" for k in range(good)), *masked_ids]):
        n = 10 + 2 * i
        ids = torch.randint(5, vocab, (n,), generator=g).tolist()
        labels = [-100] * n if name in masked_ids else [-100] * (n // 2) + ids[n // 2:]
        rows.append({"input_ids": ids, "labels": labels, "example_id": name})
    return Dataset.from_list(rows)


def trainer_for(tmp_path, model_dir, data, *sets):
    recipe = load_recipe(recipe_for(tmp_path, model_dir), [
        f"training.max_steps={len(data)}", "training.batch_size=1", "training.grad_accum=1", "lora.dropout=0.0", *sets])
    trainer, loaded = fastft_trainer(recipe, tmp_path / "checkpoints", data)
    trainer.args.train_sampling_strategy = "sequential"  # so a test knows which examples form each step
    return trainer, loaded.model


def nan_gradients_from(call: int):
    """A gradient hook that turns the gradient into NaN from its `call`-th backward on (1-based); the loss stays finite."""
    calls = []

    def hook(grad):
        calls.append(1)
        return torch.full_like(grad, float("nan")) if len(calls) >= call else grad
    return hook


def lora_b(model):
    return next(p for n, p in model.named_parameters() if "down_proj.lora_B" in n)


def test_all_masked_batch_is_skipped_and_counted(tmp_path, tiny_llama):
    trainer, model = trainer_for(tmp_path, tiny_llama, records(300, masked_ids=("masked",)))
    trainer.train()
    assert trainer.all_masked_batches == 1
    assert trainer.state.global_step == 4


def test_non_finite_loss_stops_naming_step_and_examples(tmp_path, tiny_llama):
    trainer, model = trainer_for(tmp_path, tiny_llama, records(300))
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "down_proj.lora_B" in n).fill_(float("nan"))
    with pytest.raises(FastftError) as info:
        trainer.train()
    message = str(info.value)
    assert "the training loss became nan at step 1 on examples ['good-" in message
    assert "last good checkpoint: none saved yet" in message


def test_non_finite_gradient_stops_before_the_optimizer_steps(tmp_path, tiny_llama):
    trainer, model = trainer_for(tmp_path, tiny_llama, records(300, good=4),
                                 "training.max_steps=2", "training.grad_accum=2", "training.save_steps=1")
    trainer.args.save_strategy = "steps"  # the factory turns saving off; this test needs checkpoint-1
    lora_b(model).register_hook(nan_gradients_from(call=3))  # the first micro-batch of step 2
    with pytest.raises(FastftError) as info:
        trainer.train()
    message = str(info.value)
    assert "the gradient norm became nan at step 2 on examples ['good-2', 'good-3']" in message
    assert f"last good checkpoint: {tmp_path / 'checkpoints' / 'checkpoint-1'}" in message
    assert all(torch.isfinite(p).all() for p in model.parameters() if p.requires_grad)


def test_cli_reports_a_non_finite_gradient_in_one_message_with_exit_2(tmp_path, tiny_llama, monkeypatch):
    build_model = fastft.training.build.build_model

    def build_with_nan_gradients(*args, **kwargs):  # fault injected into the model the run trains
        loaded = build_model(*args, **kwargs)
        lora_b(loaded.model).register_hook(nan_gradients_from(call=1))
        return loaded
    monkeypatch.setattr(fastft.training.build, "build_model", build_with_nan_gradients)
    result = CliRunner().invoke(main, ["run", str(recipe_for(tmp_path, tiny_llama)), "--set", "dataset.max_train_samples=8",
                                       "--set", "dataset.eval=null", "--set", "training.grad_accum=1"])
    assert result.exit_code == 2
    assert "fastft error the gradient norm became nan at step 1 on examples [" in result.output
    assert "last good checkpoint: none saved yet" in result.output and "Traceback" not in result.output


class OutOfMemoryIn:
    """A forward hook raising what CUDA raises when an allocation fails."""

    def __call__(self, module, args, output):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_names_the_batch_settings_and_the_fixes(tmp_path, tiny_llama):
    trainer, model = trainer_for(tmp_path, tiny_llama, records(300), "training.batch_size=2", "training.grad_accum=3")
    # The model is real; the allocation failure is injected into its first MLP.
    next(m for n, m in model.named_modules() if n.endswith("layers.0.mlp")).register_forward_hook(OutOfMemoryIn())
    with pytest.raises(FastftError) as info:
        trainer.train()
    error = info.value
    assert error.message == ("out of GPU memory at step 1: training.batch_size 2, training.grad_accum 3, longest sequence "
                             "in the batch 12 tokens (dataset.max_prompt_tokens=192 + max_answer_tokens=48)")
    assert error.hint == ("lower training.batch_size and raise training.grad_accum to keep batch_size x grad_accum = 6; "
                          "or set training.gradient_checkpointing: true; or train with QLoRA (--use-qlora); "
                          "or lower the token budget")
    assert isinstance(error.__cause__, torch.OutOfMemoryError)

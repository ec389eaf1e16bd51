"""Training guards: a batch without trained tokens is skipped and counted; a non-finite loss stops the run."""
import pytest
import torch
from datasets import Dataset

from fastft.config.loader import load_recipe
from fastft.errors import FastftError
from tests.factories import fastft_trainer, recipe_for


def records(vocab: int, masked_ids=()):
    g = torch.Generator().manual_seed(0)
    rows = []
    for name in ["good-0", "good-1", "good-2", *masked_ids]:
        ids = torch.randint(5, vocab, (12,), generator=g).tolist()
        labels = [-100] * 12 if name in masked_ids else [-100] * 6 + ids[6:]
        rows.append({"input_ids": ids, "labels": labels, "example_id": name})
    return Dataset.from_list(rows)


def trainer_for(tmp_path, model_dir, data):
    recipe = load_recipe(recipe_for(tmp_path, model_dir), [
        f"training.max_steps={len(data)}", "training.batch_size=1", "training.grad_accum=1", "lora.dropout=0.0"])
    trainer, loaded = fastft_trainer(recipe, tmp_path / "checkpoints", data)
    return trainer, loaded.model


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

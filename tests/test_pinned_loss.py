"""The default recipe's model and data, a few optimiser steps: the losses equal committed values.

A change to data rendering, masking, the loss, the kernels or the patching that alters training shows up
here as a number that moved. Regenerate the pins only for an intended change, and say so in the commit.
"""
import pytest

from fastft.config.loader import load_recipe
from fastft.data.collator import PadCollator
from fastft.data.pipeline import build_splits
from fastft.models.build import build_model, prepare_tokenizer, resolve_recipe
from fastft.training.args import sft_config
from fastft.training.trainer import FastftTrainer
from tests.factories import REPO

STEPS = 4
# Measured on the CPU path (fp32) on 2026-11-25, transformers 5.24, peft 0.21.2, torch 2.13.
PINNED = [3.5955874919891357, 3.1347553730010986, 3.3313920497894287, 3.143425941467285]


@pytest.fixture(scope="module")
def losses(tmp_path_factory):
    from transformers import set_seed

    out = tmp_path_factory.mktemp("pinned")
    recipe = load_recipe(REPO / "recipes" / "gemma3_270m_ko_summary.yaml", [
        "dataset.max_train_samples=8", "dataset.eval=null", "dataset.max_prompt_tokens=96", "dataset.max_answer_tokens=48",
        f"training.max_steps={STEPS}", "training.batch_size=2", "training.grad_accum=1", "training.warmup_ratio=0.0",
        "training.lr_scheduler=constant", "training.logging_steps=1", "lora.dropout=0.0", f"output.dir={out}",
    ])
    recipe, _ = resolve_recipe(recipe, lambda *_: None)
    source, tokenizer, new_ids = prepare_tokenizer(recipe, lambda *_: None)
    train, _ = build_splits(recipe.dataset, tokenizer, None)
    set_seed(recipe.seed)
    loaded = build_model(recipe, source, tokenizer, new_ids)
    args = sft_config(recipe, str(out), has_eval=False, compute_dtype=loaded.dtype)
    args.save_strategy = "no"
    args.disable_tqdm = True
    trainer = FastftTrainer(model=loaded.model, args=args, train_dataset=train.dataset, processing_class=tokenizer,
                            data_collator=PadCollator(tokenizer.pad_token_id))
    trainer.train()
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def test_default_recipe_losses_are_pinned(losses):
    print("losses:", losses)
    assert len(losses) == STEPS
    assert losses == pytest.approx(PINNED, rel=1e-4)

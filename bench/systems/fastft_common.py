"""The fastft systems: the model built by fastft's own build_model (loading, LoRA, kernels), its training arguments
and collator."""
from dataclasses import replace

from ..recipe import fastft_recipe
from .common import TRAINER_DIR, TrainerRun


def fastft_run(cfg, data, trainer_cls, kernels_on: bool) -> TrainerRun:
    from datasets import Dataset

    from fastft.data.collator import PadCollator
    from fastft.training.args import sft_config
    from fastft.training.build import build_model

    recipe = fastft_recipe(cfg, data.source, kernels_on)
    # build_model seeds (recipe.seed is the benchmark's SEED) right before making the adapters, as every system does.
    loaded = build_model(replace(data.resolved, recipe=recipe))
    notes = "kernels: " + "; ".join(loaded.kernels.lines()) if kernels_on else "kernels: off (HF forward with labels: full logits)"
    collate = PadCollator(data.tokenizer.pad_token_id)
    features = [[{"input_ids": row.input_ids, "labels": row.labels} for row in rows] for rows in data.batches]
    trainer = trainer_cls(
        model=loaded.model,
        args=sft_config(recipe, TRAINER_DIR, False, loaded.dtype),
        train_dataset=Dataset.from_list([f for batch in features for f in batch]),
        processing_class=data.tokenizer,
        data_collator=collate,
    )
    return TrainerRun(trainer, [collate(batch) for batch in features], notes)

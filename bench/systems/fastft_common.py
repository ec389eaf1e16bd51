"""The fastft systems: fastft's own model loading, LoRA setup, training arguments and collator."""
from ..config import SEED
from ..recipe import fastft_recipe
from .common import TRAINER_DIR, TrainerRun, seed_adapters


def patch_kernels(model, kernels_cfg) -> str:
    """fastft's kernel patches where the patching layer exists; otherwise only the loss is fastft's."""
    try:
        from fastft.patching import apply_kernels
    except ModuleNotFoundError as exc:
        if exc.name not in ("fastft.patching", "fastft"):
            raise  # the layer exists but something it needs is missing: a real error
        return "kernels: loss only (fastft.patching not available)"
    report = apply_kernels(model, kernels_cfg)
    return "kernels: " + ("; ".join(report.lines()) if hasattr(report, "lines") else str(report))


def fastft_run(cfg, data, trainer_cls, kernels_on: bool) -> TrainerRun:
    from datasets import Dataset
    from fastft.data.collator import PadCollator
    from fastft.models.loader import add_lora, load_base_model
    from fastft.training.args import sft_config

    recipe = fastft_recipe(cfg, data.source, kernels_on)
    model, dtype = load_base_model(recipe.model, recipe.qlora, str(data.source))
    seed_adapters(SEED)
    model = add_lora(model, recipe.lora, cfg.quant == "nf4", cfg.gradient_checkpointing, [])
    notes = patch_kernels(model, recipe.kernels) if kernels_on else "kernels: off (HF forward with labels: full logits)"
    collate = PadCollator(data.tokenizer.pad_token_id)
    features = [[{"input_ids": row.input_ids, "labels": row.labels} for row in rows] for rows in data.batches]
    trainer = trainer_cls(
        model=model,
        args=sft_config(recipe, TRAINER_DIR, False, dtype),
        train_dataset=Dataset.from_list([f for batch in features for f in batch]),
        processing_class=data.tokenizer,
        data_collator=collate,
    )
    return TrainerRun(trainer, [collate(batch) for batch in features], notes)

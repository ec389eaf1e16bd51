"""The one place a recipe becomes a model ready to train and the FastftTrainer that trains it: `fastft run`,
the tests and bench/ all build through here."""
from pathlib import Path

from transformers import ProgressCallback, set_seed

from ..data.collator import PadCollator
from ..models.loader import LoadedModel, add_lora, count_params, device_name, load_base_model, resolve_dtype
from ..models.unsloth_backend import load_with_unsloth
from ..patching import apply_kernels
from ..patching.checkpointing import check_selective, full_checkpointing
from ..patching.frozen_storage import store_frozen_bf16
from .args import sft_config
from .trainer import FastftTrainer


class _ProgressBarOnly(ProgressCallback):
    """Trainer's progress bar without its printout of every log dict: the run log already prints those lines."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        pass


def build_model(resolved, backend: str = "hf") -> LoadedModel:
    """The base model with LoRA (and the trained token rows) and fastft's kernels. `backend` from
    unsloth_backend.select_backend, called before anything is written."""
    recipe = resolved.recipe
    check_selective(recipe, backend)
    # Seeded right before the adapters are made (their A matrices are drawn there), before the Trainer seeds anything.
    if backend == "unsloth":
        set_seed(recipe.seed)
        model, _ = load_with_unsloth(recipe, resolved.source)  # unverified until a GPU run exists
        dtype = resolve_dtype(recipe.model.dtype)
    else:
        model, dtype = load_base_model(recipe.model, recipe.qlora, resolved.source)
        if resolved.new_token_ids:
            model.resize_token_embeddings(len(resolved.tokenizer))
        set_seed(recipe.seed)
        model = add_lora(model, recipe.lora, recipe.model.quantization == "nf4",
                         full_checkpointing(recipe.training.gradient_checkpointing), resolved.trained_token_ids)
    kernels = apply_kernels(model, recipe.kernels, dtype, checkpointing=recipe.training.gradient_checkpointing,
                            device=device_name())  # a LoRA base is still on the CPU here; the Trainer moves it
    if recipe.kernels.frozen_bf16:
        store_frozen_bf16(model, kernels, dtype)
    trainable, total = count_params(model)
    return LoadedModel(model, resolved.tokenizer, resolved.source, device_name(), dtype, trainable, total, backend, kernels)


def build_trainer(resolved, train_dataset, eval_dataset, checkpoints: Path, backend: str = "hf", callbacks=(),
                  save: bool = True, phases=None) -> tuple[FastftTrainer, LoadedModel]:
    """(trainer, model). Trainer saves its checkpoints in `checkpoints`; `save=False` (tests) saves none and draws
    no progress bar. `phases`: the run's timer (runtime/phases.py), which the trainer's evaluations and checkpoint
    saves report to."""
    recipe, tokenizer = resolved.recipe, resolved.tokenizer
    loaded = build_model(resolved, backend)
    args = sft_config(recipe, str(checkpoints), eval_dataset is not None, loaded.dtype)
    if not save:
        args.save_strategy, args.disable_tqdm = "no", True
    trainer = FastftTrainer(
        model=loaded.model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=PadCollator(tokenizer.pad_token_id, with_ids=True),
        callbacks=list(callbacks),
        fused_loss=loaded.kernels.uses("loss"),  # off in the recipe, or failed the GPU self-check
        token_budget=(recipe.dataset.max_prompt_tokens, recipe.dataset.max_answer_tokens),
        phases=phases,
    )
    if trainer.pop_callback(ProgressCallback):  # absent when progress bars are disabled
        trainer.add_callback(_ProgressBarOnly)
    return trainer, loaded

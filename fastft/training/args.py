"""Recipe training section -> TRL SFTConfig."""
import torch

from ..patching.checkpointing import full_checkpointing
from .tensorboard import TENSORBOARD


def optimizer_name(name: str) -> str:
    if name != "auto":
        return name
    # The seed's paged optimizer needs CUDA; plain AdamW is the CPU equivalent.
    return "paged_adamw_32bit" if torch.cuda.is_available() else "adamw_torch"


def checkpoint_schedule(save_steps: int | None, has_eval: bool) -> dict:
    """When to save and evaluate. Evaluation follows the save interval because load_best_model_at_end needs
    both on the same schedule; without an eval split only save_steps asks for checkpoints."""
    if save_steps:
        return dict(save_strategy="steps", save_steps=save_steps,
                    eval_strategy="steps" if has_eval else "no", eval_steps=save_steps if has_eval else None)
    per_epoch = "epoch" if has_eval else "no"
    return dict(save_strategy=per_epoch, eval_strategy=per_epoch)


def sft_config(recipe, output_dir: str, has_eval: bool, compute_dtype: torch.dtype):
    from trl import SFTConfig

    t = recipe.training
    on_gpu = torch.cuda.is_available()
    # transformers 5.2x renamed gradient_checkpointing to activation_checkpointing and warns on the old name; 4.56 to
    # 5.1x know only the old one.
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in SFTConfig.__dataclass_fields__ else "gradient_checkpointing"
    return SFTConfig(
        output_dir=output_dir,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size or t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        # selective is fastft's own (the patched MLP blocks recompute, fastft.patching.checkpointing): HF's stays off
        **{checkpointing: full_checkpointing(t.gradient_checkpointing)},
        optim=optimizer_name(t.optimizer),
        logging_steps=t.logging_steps,
        logging_first_step=True,
        **checkpoint_schedule(t.save_steps, has_eval),
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=has_eval,
        metric_for_best_model=recipe.evaluation.metric_for_best if has_eval else None,
        greater_is_better=recipe.evaluation.metric_for_best != "eval_loss",  # generation metrics: higher is better
        prediction_loss_only=True,
        bf16=on_gpu and compute_dtype == torch.bfloat16,
        fp16=on_gpu and compute_dtype == torch.float16,
        # TensorBoard is added by run.py (training/tensorboard.py), which puts its events in the run folder.
        report_to=[name for name in recipe.logging.report_to if name != TENSORBOARD] or "none",
        seed=recipe.seed,
        data_seed=recipe.seed,
        max_length=None,  # fastft's encoder already applied the token budget
        packing=False,
        remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        dataloader_pin_memory=on_gpu,
        # Without it accelerate sees no GPU under torchrun and lets every rank train alone instead of joining gloo.
        use_cpu=not on_gpu,
        include_num_input_tokens_seen="non_padding",  # the token count of usage.py's tokens/s
    )

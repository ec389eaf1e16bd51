"""`fastft run`: recipe -> data -> model -> train -> evaluate -> save. Components live in their own modules."""
import json
from dataclasses import dataclass, field
from pathlib import Path

from transformers import ProgressCallback, TrainerCallback, set_seed

from ..config.loader import load_recipe
from ..data.collator import PadCollator
from ..data.pipeline import build_splits
from ..evaluation.callback import EpochGeneration
from ..models.build import prepare_tokenizer, resolve_recipe
from ..models.unsloth_backend import select_backend
from ..runtime.distributed import barrier, is_main, main_decides
from ..runtime.outputs import CHECKPOINTS, METRICS, check_output_dir, open_output_dir
from ..runtime.progress import progress
from ..runtime.runlog import RunLog
from ..training.args import optimizer_name, sft_config
from ..training.build import build_model
from ..training.tensorboard import tensorboard_callback, wants_tensorboard
from ..training.trainer import FastftTrainer
from ..training.usage import UsageMeter
from .report import write_run_record
from .summary import data_stats, data_summary, model_summary, print_metrics


@dataclass
class RunResult:
    output_dir: Path
    final_model: Path
    log_file: Path
    metrics: dict = field(default_factory=dict)


class _LogToRunLog(TrainerCallback):
    def __init__(self, log: RunLog):
        self.log = log

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in logs.items())
            self.log(f"step {state.global_step}: {shown}")


class _ProgressBarOnly(ProgressCallback):
    """Trainer's progress bar without its printout of every log dict: _LogToRunLog already prints those lines."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        pass


def final_eval_loss(trainer) -> float:
    """Eval loss of the weights training ended with (the best checkpoint's, which Trainer restores at the end). The
    evaluation that chose that checkpoint already measured it; evaluate again only when no logged one applies."""
    step = trainer.state.best_global_step or trainer.state.global_step
    logged = [e["eval_loss"] for e in trainer.state.log_history if e.get("step") == step and "eval_loss" in e]
    return logged[-1] if logged else trainer.evaluate()["eval_loss"]


def run(recipe, recipe_file: Path | None, log: RunLog, mode: str = "new") -> RunResult:
    # Everything that can fail on user input (output folder, tokenizer, data) runs before anything is written.
    output_dir = Path(recipe.output.dir) / recipe.experiment
    recipe, _ = resolve_recipe(recipe, log)
    # Rank 0 alone looks at the folder (once it has made it, another rank would find "a run" there); every rank
    # gets its answer, or its refusal.
    resume_from = main_decides(lambda: check_output_dir(output_dir, recipe, mode))
    backend = select_backend(recipe.model)
    source, tokenizer, new_ids = prepare_tokenizer(recipe, log)
    train, evaluation = build_splits(recipe.dataset, tokenizer, recipe_file, progress=progress)
    main_decides(lambda: open_output_dir(output_dir, recipe, mode))
    log.open()

    set_seed(recipe.seed)  # LoRA's A matrices are drawn here, before the Trainer seeds anything
    loaded = build_model(recipe, source, tokenizer, new_ids, backend)
    args = sft_config(recipe, str(output_dir / CHECKPOINTS), evaluation is not None, loaded.dtype)
    model_summary(log, recipe, loaded, optimizer_name(recipe.training.optimizer), args)
    data_summary(log, train, evaluation)
    # Trainer's own evaluation at step 0 rather than trainer.evaluate() before train(): evaluating first makes
    # accelerate mark the model prepared, and train() then never wraps it in DDP, so every rank would train alone.
    args.eval_on_start = bool(evaluation) and recipe.training.eval_before_training and resume_from is None

    usage = UsageMeter()
    trainer = FastftTrainer(
        model=loaded.model,
        args=args,
        train_dataset=train.dataset,
        eval_dataset=evaluation.dataset if evaluation else None,
        processing_class=tokenizer,
        data_collator=PadCollator(tokenizer.pad_token_id, with_ids=True),
        callbacks=[_LogToRunLog(log), usage] + ([tensorboard_callback(output_dir)] if wants_tensorboard(recipe.logging) else []),
        fused_loss=recipe.kernels.loss,
        token_budget=(recipe.dataset.max_prompt_tokens, recipe.dataset.max_answer_tokens),
    )
    if trainer.pop_callback(ProgressCallback):  # absent when progress bars are disabled
        trainer.add_callback(_ProgressBarOnly)
    generation = None
    if recipe.evaluation.generate_every_epoch:  # the schema has checked that there is an eval split
        generation = EpochGeneration(recipe, recipe_file, tokenizer, output_dir, trainer.log)
        trainer.add_callback(generation)
    metrics = {}
    if resume_from:
        automatic = " (the folder holds an unfinished run of this recipe)" if mode == "new" else ""
        log(f"resuming from {resume_from}{automatic}")
    train_out = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    if args.eval_on_start:
        metrics["eval_loss_before"] = next(e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e)
        log(f"eval loss before training: {metrics['eval_loss_before']:.4f}")
    metrics.update(train_loss=train_out.training_loss, train_runtime_s=train_out.metrics.get("train_runtime"),
                   all_masked_batches_skipped=trainer.all_masked_batches, **usage.metrics())
    if generation:
        # The final evaluation is of the best checkpoint, generated on when it was saved: fine_tuned reads that.
        trainer.remove_callback(generation)
        metrics.update(generation.summary(trainer.state))
    if evaluation:
        metrics["eval_loss_after"] = final_eval_loss(trainer)
        log(f"eval loss after training: {metrics['eval_loss_after']:.4f}")

    final_model = output_dir / "final_model"
    trainer.save_model(str(final_model))  # on every rank: FSDP / ZeRO-3 gather the weights together; Trainer writes on rank 0
    if is_main():  # the end-of-run files; the other ranks trained the same run and only wait
        if new_ids:  # PEFT saves resized embeddings only when it can read the base config; make sure the new rows travel
            trainer.model.save_pretrained(str(final_model), save_embedding_layers=True)
        tokenizer.save_pretrained(str(final_model))
        (output_dir / METRICS).write_text(json.dumps(metrics, indent=2), encoding="utf-8")
        report = write_run_record(output_dir, trainer.state.log_history, data_stats(train, evaluation))
        log(f"report: {report}")
    barrier()
    result = RunResult(output_dir, final_model, log.path, metrics)
    print_metrics(log, result)
    return result


def run_command(recipe_file: Path, overrides: list[str], mode: str, console) -> RunResult:
    recipe = load_recipe(recipe_file, overrides)
    log = RunLog(recipe.output.logs_dir, recipe.experiment, console)
    try:
        return run(recipe, recipe_file, log, mode=mode)
    finally:
        log.close()

"""`fastft run` in three steps: prepare (everything that can fail on input, before anything is written), build
(model, data, trainer: training/build.py) and finish (evaluate, save, report)."""
import json
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

from transformers import TrainerCallback

from ..config.loader import load_recipe
from ..config.optional import check_optional_packages
from ..data.pipeline import Split, build_splits
from ..data.stats import data_stats
from ..evaluation.callback import EpochGeneration
from ..models.resolve import ResolvedModel, resolve_model
from ..models.unsloth_backend import select_backend
from ..runtime.distributed import barrier, is_main, main_decides, world_size
from ..runtime.interrupt import SAME_PRESS_S, Stopped, StopRequests
from ..runtime.lock import RunFolderLock
from ..runtime.outputs import CHECKPOINTS, METRICS, check_output_dir, last_checkpoint, open_output_dir
from ..runtime.phases import Phases, time_line
from ..runtime.progress import progress_bar
from ..runtime.runlog import RunLog
from ..runtime.writable import check_output_locations, disk_full, folder_size, is_disk_full
from ..training.args import optimizer_name
from ..training.build import build_trainer
from ..training.stop import StopAtStepEnd
from ..training.tensorboard import tensorboard_callback, wants_tensorboard
from ..training.usage import UsageMeter
from .preflight import preflight
from .report import write_report, write_run_record
from .summary import data_summary, model_summary, print_metrics
from .tracking import tracked


@dataclass
class RunResult:
    output_dir: Path
    final_model: Path
    log_file: Path
    metrics: dict = field(default_factory=dict)


@dataclass
class Prepared:
    """Everything a run needs from its input, checked; nothing written yet."""

    resolved: ResolvedModel
    output_dir: Path
    mode: str
    resume_from: Path | None
    backend: str
    train: Split
    evaluation: Split | None
    lock: RunFolderLock  # held by rank 0 from its first look at the folder to the end of the run
    resources: list[str]  # the start-up summary's memory and disk estimates (preflight.py)
    phases: Phases  # the run's timer (runtime/phases.py), started before anything else


@dataclass
class Built:
    trainer: object
    usage: UsageMeter
    generation: EpochGeneration | None


class _LogToRunLog(TrainerCallback):
    def __init__(self, run_log: RunLog):
        self.run_log = run_log

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in logs.items())
            self.run_log(f"step {state.global_step}: {shown}")


def prepare(recipe, recipe_file: Path | None, run_log: RunLog, mode: str, phases: Phases, force: bool = False) -> Prepared:
    output_dir = Path(recipe.output.dir) / recipe.experiment
    main_decides(lambda: check_output_locations(output_dir, Path(recipe.output.logs_dir)))
    lock = RunFolderLock(output_dir)
    if output_dir.is_dir():  # before looking inside: another run may be writing there
        main_decides(lock.acquire)
    try:
        return _prepare(recipe, recipe_file, run_log, mode, output_dir, lock, force, phases)
    except BaseException:
        lock.release()
        raise


def _prepare(recipe, recipe_file, run_log, mode, output_dir, lock, force, phases) -> Prepared:
    # Before any loading or conversion: a backend this machine cannot run, then a package the recipe needs.
    backend = select_backend(recipe.model)
    check_optional_packages(recipe, "train")
    with phases("model_resolve"):  # the packaged model's conversion check (and first conversion), the tokenizer
        resolved = resolve_model(recipe, run_log)
    # Rank 0 alone looks at the folder (once it has made it, another rank would find "a run" there); every rank
    # gets its answer, or its refusal.
    resume_from = main_decides(lambda: check_output_dir(output_dir, resolved.recipe, mode))
    with phases("tokenization"):
        train, evaluation = build_splits(resolved.recipe.dataset, resolved.tokenizer, recipe_file, progress_bar)
    resources = main_decides(lambda: preflight(resolved, train.dataset, output_dir, force, world_size()))
    return Prepared(resolved, output_dir, mode, resume_from, backend, train, evaluation, lock, resources, phases)


def build(prepared: Prepared, run_log: RunLog) -> Built:
    recipe = prepared.resolved.recipe
    usage = UsageMeter()
    callbacks = [_LogToRunLog(run_log), usage]
    if wants_tensorboard(recipe.logging):
        callbacks.append(tensorboard_callback(prepared.output_dir))
    evaluation = prepared.evaluation
    with prepared.phases("loading"):  # the base model, LoRA, kernels, the trainer
        trainer, loaded = build_trainer(prepared.resolved, prepared.train.dataset, evaluation.dataset if evaluation else None,
                                        prepared.output_dir / CHECKPOINTS, prepared.backend, callbacks, phases=prepared.phases)
    model_summary(run_log, recipe, loaded, optimizer_name(recipe.training.optimizer), trainer.args)
    data_summary(run_log, prepared.train, evaluation)
    for line in prepared.resources:
        run_log(line)
    # Trainer's own evaluation at step 0 rather than trainer.evaluate() before train(): evaluating first makes
    # accelerate mark the model prepared, and train() then never wraps it in DDP, so every rank would train alone.
    trainer.args.eval_on_start = bool(evaluation) and recipe.training.eval_before_training and prepared.resume_from is None
    generation = None
    if recipe.evaluation.generate_at_eval:  # the schema has checked that there is an eval split
        generation = EpochGeneration(recipe, evaluation, prepared.resolved.tokenizer, prepared.output_dir, trainer.log,
                                     prepared.phases)
        trainer.add_callback(generation)
    return Built(trainer, usage, generation)


def final_eval_loss(trainer) -> float:
    """Eval loss of the weights training ended with (the best checkpoint's, which Trainer restores at the end). The
    evaluation that chose that checkpoint already measured it; evaluate again only when no logged one applies."""
    step = trainer.state.best_global_step or trainer.state.global_step
    logged = [e["eval_loss"] for e in trainer.state.log_history if e.get("step") == step and "eval_loss" in e]
    return logged[-1] if logged else trainer.evaluate()["eval_loss"]


def train(prepared: Prepared, built: Built, run_log: RunLog) -> dict:
    trainer, resume_from = built.trainer, prepared.resume_from
    metrics = {}
    if resume_from:
        automatic = " (the folder holds an unfinished run of this recipe)" if prepared.mode == "new" else ""
        run_log(f"resuming from {resume_from}{automatic}")
    checkpoints = prepared.output_dir / CHECKPOINTS
    # Under torchrun one Ctrl-C reaches a rank twice (terminal and torchrun): that pair is one request.
    with StopRequests(lambda: last_checkpoint(checkpoints), SAME_PRESS_S if world_size() > 1 else 0.0) as requests:
        stop = StopAtStepEnd(requests)
        trainer.add_callback(stop)
        with prepared.phases("training"):  # less the evaluations and checkpoint saves inside (training/timing.py)
            train_out = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    trainer.remove_callback(stop)
    if stop.signal:
        state = trainer.state
        line = (f"stopped at step {state.global_step} of {state.max_steps}; checkpoint saved in "
                f"{last_checkpoint(checkpoints)}; run the same command to continue")
        run_log(line)
        raise Stopped(line, 128 + stop.signal)
    if trainer.args.eval_on_start:
        metrics["eval_loss_before"] = next(e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e)
        run_log(f"eval loss before training: {metrics['eval_loss_before']:.4f}")
    metrics.update(train_loss=train_out.training_loss, train_runtime_s=train_out.metrics.get("train_runtime"),
                   all_masked_batches_skipped=trainer.all_masked_batches, **built.usage.metrics())
    return metrics


def save_final_model(prepared: Prepared, trainer, final_model: Path) -> None:
    """Adapter and tokenizer; on a full disk the partial folder goes and the run stays resumable (no metrics.json)."""
    try:
        trainer.save_model(str(final_model))  # every rank: FSDP / ZeRO-3 gather the weights together; rank 0 writes
        if is_main():
            if prepared.resolved.new_token_ids:  # PEFT saves resized embeddings only when it can read the base config
                trainer.model.save_pretrained(str(final_model), save_embedding_layers=True)
            prepared.resolved.tokenizer.save_pretrained(str(final_model))
    except OSError as error:
        if not is_disk_full(error):
            raise
        previous = last_checkpoint(prepared.output_dir / CHECKPOINTS)
        adapter = previous / "adapter_model.safetensors" if previous else None
        needed = folder_size(final_model) + (adapter.stat().st_size if adapter and adapter.exists() else 0)
        shutil.rmtree(final_model, ignore_errors=True)
        raise disk_full("final_model", prepared.output_dir, needed, previous) from None


def finish(prepared: Prepared, built: Built, metrics: dict, run_log: RunLog) -> RunResult:
    trainer, output_dir = built.trainer, prepared.output_dir
    if built.generation:
        # The final evaluation is of the best checkpoint, generated on when it was saved: fine_tuned reads that.
        trainer.remove_callback(built.generation)
        metrics.update(built.generation.summary(trainer.state))
    if prepared.evaluation:
        metrics["eval_loss_after"] = final_eval_loss(trainer)
        run_log(f"eval loss after training: {metrics['eval_loss_after']:.4f}")

    final_model = output_dir / "final_model"
    with prepared.phases("final_model_saving"):
        save_final_model(prepared, trainer, final_model)
    if is_main():  # the end-of-run files; the other ranks trained the same run and only wait
        with prepared.phases("report"):
            write_run_record(output_dir, trainer.state.log_history, data_stats(prepared.train, prepared.evaluation))
    # The run's clock stops here: what follows writes two small text files and prints.
    metrics["phases_s"] = prepared.phases.seconds()
    if is_main():
        (output_dir / METRICS).write_text(json.dumps(metrics, indent=2), encoding="utf-8")
        run_log(f"report: {write_report(output_dir)}")
    barrier()
    result = RunResult(output_dir, final_model, run_log.path, metrics)
    # The phases show as the one time line below, not as a row of the metrics table.
    print_metrics(run_log, replace(result, metrics={key: value for key, value in metrics.items() if key != "phases_s"}))
    run_log(time_line(metrics["phases_s"]))
    return result


def run(recipe, recipe_file: Path | None, run_log: RunLog, mode: str = "new", force: bool = False) -> RunResult:
    prepared = prepare(recipe, recipe_file, run_log, mode, Phases(), force)
    try:
        main_decides(lambda: prepared.lock.acquire(create=True))
        notice = main_decides(lambda: open_output_dir(prepared.output_dir, prepared.resolved.recipe, mode))
        run_log.open()
        if notice:
            run_log(notice)
        with tracked(prepared.resolved.recipe, prepared.output_dir, run_log) as tracking:
            built = build(prepared, run_log)
            result = finish(prepared, built, train(prepared, built, run_log), run_log)
            tracking.record(result.output_dir)
        return result
    finally:
        prepared.lock.release()


def run_command(recipe_file: Path, overrides: list[str], mode: str, console, force: bool = False) -> RunResult:
    recipe = load_recipe(recipe_file, overrides)
    run_log = RunLog(recipe.output.logs_dir, recipe.experiment, console)
    try:
        return run(recipe, recipe_file, run_log, mode=mode, force=force)
    finally:
        run_log.close()

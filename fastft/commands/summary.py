"""What a run prints: the start-up summary and the final table of metrics and paths."""
import platform

import torch

from ..config.optional import optional_summary
from ..data.stats import named_splits, split_stats
from ..models.loader import dtype_choice

TASK_METRICS = ("zero_shot", "fine_tuned")  # metrics.json's task scores before and after training


def versions() -> str:
    import peft
    import transformers
    import trl

    return f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, trl {trl.__version__}"


def model_summary(log, recipe, loaded, optimizer: str, args) -> None:
    t = recipe.training
    share = 100.0 * loaded.trainable_params / max(loaded.total_params, 1)
    quant = f"QLoRA {recipe.qlora.quant_type} (compute {recipe.qlora.compute_dtype})" if recipe.model.quantization == "nf4" else "LoRA"
    log(f"[bold]fastft run[/bold] {recipe.experiment}")
    log(f"  model      {recipe.model.name} ({loaded.source})")
    log(f"  method     {quant}, r={recipe.lora.r}, alpha={recipe.lora.alpha:g}, dropout={recipe.lora.dropout:g}, targets={recipe.lora.target_modules}")
    log(f"  parameters {loaded.trainable_params:,} trained / {loaded.total_params:,} total ({share:.2f}%)")
    log(f"  batch      {t.batch_size} x {t.grad_accum} accumulation x {args.world_size} processes = "
        f"{t.batch_size * t.grad_accum * args.world_size} examples per optimizer step (global batch), lr {t.learning_rate:g} {t.lr_scheduler}")
    log(f"  backend    {loaded.backend}, attention {recipe.model.attn_implementation}")
    for line in loaded.kernels.lines():
        log(f"  kernels    {line}")
    dtype = f"{str(loaded.dtype).replace('torch.', '')} ({dtype_choice(recipe.model.dtype)[1]})"
    log(f"  device     {loaded.device}, dtype {dtype}, optimizer {optimizer}, gradient checkpointing {'selective' if t.gradient_checkpointing == 'selective' else 'on' if args.gradient_checkpointing else 'off'}")
    log(f"  optional   {optional_summary(recipe)}")
    log(f"  versions   {versions()}")


def data_summary(log, train, evaluation) -> None:
    for name, split in named_splits(train, evaluation).items():
        n = split_stats(split)
        log(
            f"  data {name:5s} {n['examples']} examples from {n['rendered']} rendered ({n['path']}); "
            f"{n['tokens']:,} tokens, {n['trained_tokens']:,} trained ({100.0 * n['trained_tokens'] / max(n['tokens'], 1):.1f}%), "
            f"max length {n['max_length']}; prompt truncated {n['prompt_truncated']}, answer truncated {n['answer_truncated']}, dropped {n['dropped']}"
        )
        for example_id, reason in split.stats.dropped[:5]:
            log(f"    dropped {example_id}: {reason}")


def print_metrics(log, result) -> None:
    from rich.table import Table

    table = Table(title="fastft run finished", show_header=True)
    table.add_column("what")
    table.add_column("value")
    for row in metric_rows(result.metrics):
        table.add_row(*row)
    table.add_row("final model", str(result.final_model))
    table.add_row("output folder", str(result.output_dir))
    table.add_row("log file", str(result.log_file))
    log.console.print(table)
    log(f"final model: {result.final_model}; log: {result.log_file}")


def metric_rows(metrics: dict) -> list[tuple[str, str]]:
    """(what, value) rows of the end-of-run table: numbers to 4 decimals, task metrics as one `zero-shot →
    fine-tuned` row each, rounded to 2, in the place of the first of the two."""
    first_task_key = next((key for key in metrics if key in TASK_METRICS), None)
    rows = []
    for key, value in metrics.items():
        if key == first_task_key:
            before, after = (metrics.get(name) or {} for name in TASK_METRICS)
            rows.append(("task metrics", "zero-shot → fine-tuned"))
            rows += [(f"  {name}", f"{_score(before.get(name))} → {_score(after.get(name))}")
                     for name in dict.fromkeys([*before, *after])]
        elif key not in TASK_METRICS:
            rows.append((key, f"{value:.4f}" if isinstance(value, float) else str(value)))
    return rows


def _score(value) -> str:
    return "-" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)

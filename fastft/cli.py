"""The `fastft` command line: click parsing only; fastft.commands does the work."""
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.text import Text

from .errors import FastftError
from .runtime.distributed import leave_together
from .runtime.interrupt import Stopped
from .runtime.quiet import quiet_third_party

quiet_third_party()  # before any command imports transformers or peft

DEBUG_OVERRIDES = (
    "dataset.max_train_samples=50",
    "dataset.max_eval_samples=10",
    "training.epochs=1",
    "training.max_steps=-1",
    "training.batch_size=2",
    "training.eval_batch_size=2",
    "training.grad_accum=1",
    "logging.report_to=[]",
    "evaluation.max_samples=4",
)

_err = Console(stderr=True, highlight=False)


def fail(error: FastftError) -> None:
    # The message quotes user input (keys, values, paths): print it as plain text, never as rich markup or emoji codes.
    _err.print(Text("fastft error", style="bold red") + Text(f" {error}"), soft_wrap=True)
    leave_together(error)
    sys.exit(error.exit_code)


class Group(click.Group):
    """Turns every FastftError raised by a command into one message and exit code 2, a requested stop into its exit
    code (130 for Ctrl-C, 143 for SIGTERM)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except FastftError as error:
            fail(error)
        except Stopped as stop:  # the run has printed where it stopped and how to go on
            sys.exit(stop.exit_code)
        except KeyboardInterrupt:  # Ctrl-C outside training, where nothing is half-saved: no traceback, no "Aborted!"
            _err.print("fastft: interrupted")
            sys.exit(130)


def recipe_overrides(sets, use_qlora, instruction_augmentation, debug) -> list[str]:
    """Flags become `--set` items. --debug only sets defaults for a short run, so the user's own `--set`s override
    it (`--debug --set training.max_steps=3`); the other flags are explicit choices and override `--set`."""
    items = (list(DEBUG_OVERRIDES) if debug else []) + list(sets)
    if use_qlora is not None:
        items.append(f"model.quantization={'nf4' if use_qlora else 'none'}")
    if instruction_augmentation:
        items.append("dataset.instruction_augmentation=true")
    return items


_set_option = click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="override a recipe value, e.g. training.learning_rate=1e-4 (repeatable)")


@click.group(cls=Group)
@click.version_option(package_name="fastft")
def main():
    """fastft: LoRA/QLoRA fine-tuning of causal language models from YAML recipes."""


@main.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@_set_option
def validate(recipe, sets):
    """Check a recipe (inheritance, overrides, schema) without loading a model."""
    from .commands.validate import validate as check

    click.echo(check(recipe, sets))


@main.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@_set_option
@click.option("-n", "count", type=click.IntRange(min=0), default=3, show_default=True, help="how many training examples to show")
def preview(recipe, sets, count):
    """Show training examples as the model sees them (trained tokens highlighted) and the data statistics, without loading model weights."""
    from .commands.preview import preview as show_preview

    show_preview(recipe, sets, count, Console(highlight=False))


@main.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@_set_option
@click.option("--use-qlora/--no-qlora", default=None, help="4-bit NF4 QLoRA on or off (default: as the recipe says)")
@click.option("--instruction-augmentation", is_flag=True, help="render each training example with 5 instruction phrasings")
@click.option("--debug", is_flag=True, help="50 train / 10 eval examples, 1 epoch, batch 2, no external loggers")
@click.option("--resume", is_flag=True, help="continue the run in the output folder from its last checkpoint")
@click.option("--overwrite", is_flag=True, help="delete the output folder's earlier run and start over")
@click.option("--force", is_flag=True, help="run even when the memory or disk estimate says it will not fit")
def run(recipe, sets, use_qlora, instruction_augmentation, debug, resume, overwrite, force):
    """Fine-tune a model as the RECIPE says."""
    from .commands.run import run_command

    if resume and overwrite:
        raise FastftError("--resume and --overwrite contradict each other", hint="pass one of them")
    run_command(recipe, recipe_overrides(sets, use_qlora, instruction_augmentation, debug),
                "resume" if resume else "overwrite" if overwrite else "new", Console(stderr=True), force)


@main.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--grid", "grids", multiple=True, required=True, metavar="KEY=V1,V2,...",
              help="values to try for one recipe key, e.g. lora.r=4,8,16 (repeatable: every combination runs)")
@_set_option
@click.option("--debug", is_flag=True, help="50 train / 10 eval examples, 1 epoch, batch 2, no external loggers, in every cell")
def sweep(recipe, grids, sets, debug):
    """Train every combination of the --grid values in turn, each in its own run folder under
    <output.dir>/<experiment>-sweep/, and compare them in sweep.md and sweep.png. Rerun to resume a stopped sweep."""
    from .commands.sweep import run_sweep

    table = run_sweep(recipe, grids, recipe_overrides(sets, None, False, debug), Console(stderr=True))
    click.echo(f"sweep table: {table}")


@main.command()
@click.option("--adapter", required=True, type=click.Path(path_type=Path), help="adapter folder of a run (outputs/<experiment>/final_model)")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="new or empty folder for the merged checkpoint")
@click.option("--dtype", default="bf16", show_default=True, help="bf16, fp16 or fp32 (or bfloat16/float16/float32)")
@click.option("--base", default=None, help="base model (default: the one in adapter_config.json)")
def merge(adapter, out, dtype, base):
    """Merge a LoRA/QLoRA adapter into its base and save safetensors that AutoModelForCausalLM loads."""
    from .commands.merge import merge_adapter

    click.echo(f"merged model saved to {merge_adapter(adapter, out, dtype, base)}")


@main.command()
@click.option("--adapter", required=True, type=click.Path(path_type=Path), help="adapter folder of a run (outputs/<experiment>/final_model)")
@click.option("--repo", required=True, help="Hub repository, owner/name")
@click.option("--private", is_flag=True, help="create the repository private")
@click.option("--merged", type=click.Path(path_type=Path), help="upload this `fastft merge` checkpoint instead of the adapter")
@click.option("--gguf", type=click.Path(path_type=Path), help="upload this `fastft export` GGUF file instead of the adapter")
@click.option("--staging", type=click.Path(path_type=Path), help="new or empty folder for the files to upload (default: <run>/hub)")
@click.option("--dry-run", is_flag=True, help="stage the files and the model card, upload nothing")
def push(adapter, repo, private, merged, gguf, staging, dry_run):
    """Publish a run's adapter, merged model or GGUF file on the Hugging Face Hub, with a model card."""
    from .commands.push import default_staging, stage, upload

    staging = staging or default_staging(adapter)
    click.echo(f"staged in {staging}: {', '.join(stage(adapter, staging, merged, gguf))}")
    if not dry_run:
        click.echo(f"uploaded: {upload(staging, repo, private)}")


@main.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@_set_option
@click.option("--adapter", type=click.Path(path_type=Path), help="adapter folder of a run (outputs/<experiment>/final_model)")
@click.option("--merged", type=click.Path(path_type=Path), help="instead of --adapter: a checkpoint `fastft merge` wrote (needed for a 4-bit base)")
@click.option("--gguf", "out", required=True, type=click.Path(path_type=Path), help="GGUF file to write")
@click.option("--quant", default="f16", show_default=True, help="f16, bf16 or q8_0")
@click.option("--overwrite", is_flag=True, help="replace an existing GGUF file")
def export(recipe, sets, adapter, merged, out, quant, overwrite):
    """Merge the adapter into the recipe's base and write one GGUF file for llama.cpp, Ollama and LM Studio."""
    from .commands.export import export_gguf

    click.echo(f"GGUF written to {export_gguf(recipe, sets, adapter, merged, out, quant, overwrite, _err.print)}")


@main.command(name="eval")
@click.argument("recipe", type=click.Path(path_type=Path))
@_set_option
@click.option("--adapter", type=click.Path(path_type=Path), help="adapter folder (outputs/<experiment>/final_model)")
@click.option("--zero-shot", is_flag=True, help="evaluate the base model without an adapter")
@click.option("--out", type=click.Path(path_type=Path), help="folder for predictions.csv and metrics.json")
def evaluate_command(recipe, sets, adapter, zero_shot, out):
    """Generate on the eval split with the training template and score it (ROUGE, QA EM/F1 or SWC accuracy)."""
    from .commands.eval import eval_command

    metrics, out = eval_command(recipe, sets, adapter, zero_shot, out, _err.print)
    for key, value in metrics.items():
        click.echo(f"{key:22s} {value:.4f}" if isinstance(value, float) else f"{key:22s} {value}")
    click.echo(f"predictions and metrics written to {out}")


@main.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@_set_option
@click.option("--adapter", type=click.Path(path_type=Path), help="adapter folder (outputs/<experiment>/final_model)")
@click.option("--zero-shot", is_flag=True, help="generate with the base model, without an adapter")
@click.option("--input", "input_file", type=click.Path(path_type=Path),
              help="csv/jsonl/json/parquet rows to predict (default: the recipe's eval split); the answer column may be missing")
@click.option("--output", type=click.Path(path_type=Path), help="CSV to write (default: predictions/<input name>.csv in the run folder)")
def generate(recipe, sets, adapter, zero_shot, input_file, output):
    """Generate an answer for every input row with the training template and write id,prediction[,reference] CSV."""
    from .commands.generate import generate as write_generations

    count, output = write_generations(recipe, sets, adapter, zero_shot, input_file, output, _err.print)
    click.echo(f"{count} predictions written to {output}")


@main.command()
@click.argument("recipe", required=False, type=click.Path(path_type=Path))
@_set_option
@click.option("--adapter", required=True, type=click.Path(path_type=Path), help="adapter folder (outputs/<experiment>/final_model)")
def chat(recipe, sets, adapter):
    """Talk to a fine-tuned model: one user turn per line on stdin (\\n for a line break), replies on stdout.
    RECIPE defaults to the one the run saved beside the adapter. /reset clears the history; /exit or end of input stops."""
    from .commands.chat import chat as talk

    talk(recipe, sets, adapter, click.get_text_stream("stdin"), click.echo, _err.print)


@main.command()
def doctor():
    """Show what this machine offers fastft: device, versions, bitsandbytes 4-bit, Triton, the kernel self-check."""
    from .commands.doctor import doctor_lines

    for line in doctor_lines():
        click.echo(line)


if __name__ == "__main__":
    main()

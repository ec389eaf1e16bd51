"""`fastft eval`: generate on the eval split and score it with the task's metric."""
import json
from pathlib import Path

from ..config.loader import load_recipe
from ..config.optional import check_optional_packages
from ..errors import FastftError
from ..evaluation.evaluate import eval_examples, task_metrics
from ..evaluation.predict import predict, references, write_predictions
from ..runtime.progress import progress_bar
from ..runtime.writable import check_writable_folder


def check_model_choice(adapter, zero_shot) -> None:
    if bool(adapter) == zero_shot:
        raise FastftError("pass exactly one of --adapter DIR and --zero-shot", hint="e.g. --adapter outputs/<experiment>/final_model")


def results_dir(recipe, adapter) -> Path:
    """The run folder of the adapter; zero-shot results sit beside the run's folder, not in it, so producing
    them first never blocks `fastft run`."""
    return Path(adapter).parent if adapter else Path(recipe.output.dir) / f"{recipe.experiment}-zero-shot"


def evaluate(recipe, recipe_file: Path | None, adapter: Path | None, out_dir: Path, progress_bar=None, notify=print) -> dict:
    if not recipe.dataset.eval:
        raise FastftError("the recipe has no eval split", where="dataset.eval", hint="set dataset.eval to a file to evaluate on")
    rows = eval_examples(recipe.dataset, recipe_file, recipe.dataset.max_eval_samples)
    predictions = predict(recipe, adapter, rows, progress_bar, notify)
    refs = references(rows)
    metrics = task_metrics(recipe.dataset.task, predictions, refs)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_predictions(out_dir / "predictions.csv", rows, predictions, refs)
    (out_dir / "metrics.json").write_text(json.dumps({"adapter": str(adapter) if adapter else None, **metrics}, indent=2), encoding="utf-8")
    return metrics


def eval_command(recipe_file: Path, sets, adapter: Path | None, zero_shot: bool, out: Path | None, notice) -> tuple[dict, Path]:
    """(metrics, the folder they were written to)."""
    check_model_choice(adapter, zero_shot)
    recipe = load_recipe(recipe_file, sets)
    check_optional_packages(recipe, "eval")
    key = "--out" if out else "output.dir"
    out = out or (Path(adapter).parent / "eval" if adapter else results_dir(recipe, adapter))
    check_writable_folder(out, key)
    return evaluate(recipe, recipe_file, adapter, out, progress_bar, notice), out

"""`fastft eval`: generate on the eval split and score it with the task's metric."""
import json
from pathlib import Path

from ..errors import FastftError
from ..metrics import classification_metrics, qa_metrics, rouge
from .predict import predict, read_examples, references, write_predictions


def _both_tokenizations(metric, predictions: list[str], references: list[str]) -> dict:
    morpheme = metric(predictions, references, tokenize="morpheme")
    return {**metric(predictions, references), **{f"{k}_morpheme": v for k, v in morpheme.items()}}


def task_metrics(task: str, predictions: list[str], references: list[str]) -> dict:
    """Flat numbers for metrics.json; the ROUGE sum is the competition's score."""
    if task == "summary":
        return _both_tokenizations(rouge, predictions, references)
    if task == "qa":
        return _both_tokenizations(qa_metrics, predictions, references)
    if task == "classification":
        scores = classification_metrics(predictions, references)
        return {"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"], "unparsed": scores["unparsed"]}
    return {}


def eval_examples(dataset_cfg, recipe_file: Path | None, limit: int | None) -> list:
    """The first `limit` examples of the eval split (all when None), never augmented; scoring needs their answers."""
    return read_examples(dataset_cfg, dataset_cfg.eval, "dataset.eval", recipe_file, limit, answers=True)


def evaluate(recipe, recipe_file: Path | None, adapter: Path | None, out_dir: Path, progress=None, log=print) -> dict:
    if not recipe.dataset.eval:
        raise FastftError("the recipe has no eval split", where="dataset.eval", hint="set dataset.eval to a file to evaluate on")
    rows = eval_examples(recipe.dataset, recipe_file, recipe.dataset.max_eval_samples)
    predictions = predict(recipe, adapter, rows, progress, log)
    refs = references(rows)
    metrics = task_metrics(recipe.dataset.task, predictions, refs)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_predictions(out_dir / "predictions.csv", rows, predictions, refs)
    (out_dir / "metrics.json").write_text(json.dumps({"adapter": str(adapter) if adapter else None, **metrics}, indent=2), encoding="utf-8")
    return metrics

"""`fastft eval`: generate on the eval split and score it with the task's metric."""
import csv
import json
from pathlib import Path

from ..data.pipeline import build_encoder, build_task, examples, open_split
from ..errors import FastftError
from ..metrics import classification_metrics, qa_metrics, rouge
from .generate import generate_texts, load_for_inference


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
    """The first `limit` examples of the eval split (all when None), never augmented."""
    task = build_task(dataset_cfg)
    return list(examples(task, open_split(task, dataset_cfg.eval, "dataset.eval", recipe_file, limit), augment=False))


def write_predictions(path: Path, rows, predictions: list[str], references: list[str]) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "prediction", "reference"])
        writer.writerows(zip((ex.id for ex in rows), predictions, references))


def evaluate(recipe, recipe_file: Path | None, adapter: Path | None, out_dir: Path, progress=None, log=print) -> dict:
    if not recipe.dataset.eval:
        raise FastftError("the recipe has no eval split", where="dataset.eval", hint="set dataset.eval to a file to evaluate on")
    rows = eval_examples(recipe.dataset, recipe_file, recipe.dataset.max_eval_samples)
    model, tokenizer = load_for_inference(recipe, adapter, log)
    predictions = generate_texts(model, tokenizer, build_encoder(recipe.dataset, tokenizer), rows, recipe.generation, progress)
    references = [ex.answer or "" for ex in rows]
    metrics = task_metrics(recipe.dataset.task, predictions, references)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_predictions(out_dir / "predictions.csv", rows, predictions, references)
    (out_dir / "metrics.json").write_text(json.dumps({"adapter": str(adapter) if adapter else None, **metrics}, indent=2), encoding="utf-8")
    return metrics

"""Task metrics on generated text, and the eval examples they are measured on."""
from pathlib import Path

from ..metrics import classification_metrics, qa_metrics, rouge
from ..metrics.loops import loop_count
from ..metrics.tokenize import release_morphemes
from .predict import read_examples


def _both_tokenizations(metric, predictions: list[str], references: list[str]) -> dict:
    morpheme = metric(predictions, references, tokenize="morpheme")
    release_morphemes()  # a training run scores at each evaluation and trains in between
    return {**metric(predictions, references), **{f"{k}_morpheme": v for k, v in morpheme.items()}}


def task_metrics(task: str, predictions: list[str], references: list[str]) -> dict:
    """Flat numbers for metrics.json; the ROUGE sum is the competition's score."""
    if task == "summary":  # loops: how many summaries repeat a 3-word phrase 3+ times (lower is better)
        return {**_both_tokenizations(rouge, predictions, references), "loops": loop_count(predictions)}
    if task == "qa":
        return _both_tokenizations(qa_metrics, predictions, references)
    if task == "classification":
        scores = classification_metrics(predictions, references)
        return {"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"], "unparsed": scores["unparsed"]}
    return {}


def eval_examples(dataset_cfg, recipe_file: Path | None, limit: int | None) -> list:
    """The first `limit` examples of the eval split (all when None), never augmented; scoring needs their answers."""
    return read_examples(dataset_cfg, dataset_cfg.eval, "dataset.eval", recipe_file, limit, answers=True)

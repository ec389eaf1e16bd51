"""Predictions for a file of rows with or without answers (`fastft generate`, and `fastft eval` before scoring)."""
import csv
from pathlib import Path

from ..data.pipeline import build_encoder, build_task, examples, open_split
from ..data.tasks import Example
from ..errors import FastftError
from .generate import generate_texts, load_for_inference


def read_examples(dataset_cfg, value: str, label: str, recipe_file: Path | None, limit: int | None,
                  answers: bool = False) -> list[Example]:
    """The first `limit` rows (all when None) as Examples, never augmented; `answers=True` requires the answer column."""
    task = build_task(dataset_cfg)
    source = open_split(task, value, label, recipe_file, limit, answers=answers)
    return list(examples(task, source, augment=False, predicting=not answers))


def input_examples(recipe, recipe_file: Path | None, input_file: Path | None) -> list[Example]:
    """The rows of `input_file` (relative to the working directory), else the recipe's eval split."""
    if input_file is not None:
        return read_examples(recipe.dataset, str(input_file), "--input", None, None)
    if not recipe.dataset.eval:
        raise FastftError("no --input given and the recipe has no eval split", where="dataset.eval",
                          hint="pass --input FILE, or set dataset.eval in the recipe")
    return read_examples(recipe.dataset, recipe.dataset.eval, "dataset.eval", recipe_file, recipe.dataset.max_eval_samples)


def predict(recipe, adapter: Path | None, rows: list[Example], progress_bar=None, notify=print) -> list[str]:
    """One generated answer per row, from the base model with `adapter` (or without, when None)."""
    model, tokenizer = load_for_inference(recipe, adapter, notify)
    return generate_texts(model, tokenizer, build_encoder(recipe.dataset, tokenizer), rows, recipe.generation, progress_bar)


def references(rows: list[Example]) -> list[str] | None:
    """The rows' answers ("" where one is missing), or None when no row has one: nothing to compare with."""
    if all(row.answer is None for row in rows):
        return None
    return [row.answer or "" for row in rows]


def write_predictions(path: Path, rows: list[Example], predictions: list[str], refs: list[str] | None) -> None:
    """CSV of id, prediction and, when there are references, reference."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        columns = [[row.id for row in rows], predictions] + ([refs] if refs is not None else [])
        writer = csv.writer(f)
        writer.writerow(["id", "prediction", "reference"][: len(columns)])
        writer.writerows(zip(*columns))

"""`fastft generate`: an answer for every input row, written as id,prediction[,reference] CSV."""
from pathlib import Path

from ..config.loader import load_recipe
from ..config.optional import check_optional_packages
from ..evaluation.predict import input_examples, predict, references, write_predictions
from ..runtime.progress import progress_bar
from ..runtime.writable import check_writable_file
from .eval import check_model_choice, results_dir


def generate(recipe_file: Path, sets, adapter: Path | None, zero_shot: bool, input_file: Path | None, output: Path | None,
             notice) -> tuple[int, Path]:
    """(how many predictions, the CSV they were written to)."""
    check_model_choice(adapter, zero_shot)
    recipe = load_recipe(recipe_file, sets)
    check_optional_packages(recipe, "generate")
    key = "--output" if output else "output.dir"
    output = output or results_dir(recipe, adapter) / "predictions" / f"{Path(input_file or recipe.dataset.eval).stem}.csv"
    check_writable_file(output, key)
    rows = input_examples(recipe, recipe_file, input_file)
    write_predictions(output, rows, predict(recipe, adapter, rows, progress_bar, notice), references(rows))
    return len(rows), output

"""`fastft validate`: check a recipe (inheritance, overrides, schema) without loading a model."""
from pathlib import Path

from ..config.loader import load_recipe


def validate(recipe_file: Path, sets) -> str:
    recipe = load_recipe(recipe_file, sets)
    return f"{recipe_file}: ok (experiment {recipe.experiment}, model {recipe.model.name})"

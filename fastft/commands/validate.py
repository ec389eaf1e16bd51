"""`fastft validate`: check a recipe (inheritance, overrides, schema, the optional packages it needs) without loading a
model."""
from pathlib import Path

from ..config.loader import load_recipe
from ..config.optional import check_optional_packages


def validate(recipe_file: Path, sets) -> str:
    recipe = load_recipe(recipe_file, sets)
    check_optional_packages(recipe, "train")
    return f"{recipe_file}: ok (experiment {recipe.experiment}, model {recipe.model.name})"

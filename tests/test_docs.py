"""docs/recipes.md is the recipe reference generated from the schema: it must be current and cover every key."""
from pathlib import Path

from fastft.config.docs import render
from fastft.config.schema import Recipe

DOCS = Path(__file__).resolve().parents[1] / "docs" / "recipes.md"


def test_recipe_reference_is_current():
    assert DOCS.read_text(encoding="utf-8") == render(), "regenerate: python -m fastft.config.docs > docs/recipes.md"


def test_every_key_has_a_row_with_a_meaning():
    text = render()
    for name, field in Recipe.model_fields.items():
        section = field.annotation if isinstance(field.annotation, type) and hasattr(field.annotation, "model_fields") else None
        keys = [(f"{name}.{key}", sub) for key, sub in section.model_fields.items()] if section else [(name, field)]
        for key, sub in keys:
            assert f"| `{key}` |" in text, key
            assert sub.description, f"{key} has no description in fastft/config/schema.py"

"""docs/recipes.md, generated from the recipe schema: `python -m fastft.config.docs > docs/recipes.md`.

Every key with its type, default, allowed values and meaning, section by section; tests/test_docs.py fails when
the committed file differs from what this prints.
"""
import types
import typing

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from .loader import RENAMED
from .schema import Recipe

_BOUNDS = {Gt: (">", "gt"), Ge: (">=", "ge"), Lt: ("<", "lt"), Le: ("<=", "le")}
HEADER = """# Recipe reference

Generated from `fastft/config/schema.py` by `python -m fastft.config.docs > docs/recipes.md`; do not edit by hand.
A recipe is YAML: the top-level keys below, then one mapping per section. `_base_` names recipes to inherit from
(see README, "Recipes"), and `--set section.key=value` overrides any key on the command line.
"""


def _section(annotation) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def type_name(annotation) -> str:
    """A type as a recipe writer reads it: int, list of str, chat | instruction, ... or null."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "choice"
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        named = [type_name(arg) for arg in args if arg is not type(None)]
        return " or ".join(dict.fromkeys(named)) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"list of {type_name(args[0])}"
    if origin is dict:
        return f"mapping of {type_name(args[0])} to {type_name(args[1])}"
    return getattr(annotation, "__name__", str(annotation))


def allowed(field) -> str:
    """Literal values and numeric bounds of a field, e.g. `nf4`, `fp4` or `> 0`."""
    values = [value for arg in (field.annotation, *typing.get_args(field.annotation))
              if typing.get_origin(arg) is typing.Literal for value in typing.get_args(arg)]
    # Constraints of the field itself, and of an Annotated type inside it (Optional[PositiveInt]).
    metadata = [*field.metadata, *(item for arg in typing.get_args(field.annotation) for item in getattr(arg, "__metadata__", ()))]
    bounds = [f"{sign} {getattr(item, name)}" for item in metadata for kind, (sign, name) in _BOUNDS.items() if isinstance(item, kind)]
    patterns = [f"matches `{item.pattern}`" for item in metadata if getattr(item, "pattern", None)]
    return ", ".join([f"`{value}`" for value in values] + bounds + patterns) or "-"


def default(field) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        return "-" if isinstance(value, BaseModel) else f"`{value}`"
    if field.default is PydanticUndefined:
        return "required"
    return "null" if field.default is None else f"`{str(field.default).lower() if isinstance(field.default, bool) else field.default}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table(model: type[BaseModel], prefix: str = "") -> str:
    lines = ["| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    for name, field in model.model_fields.items():
        if _section(field.annotation):
            continue
        lines.append("| " + " | ".join(_cell(cell) for cell in (
            f"`{prefix}{name}`", type_name(field.annotation), default(field), allowed(field), field.description or "")) + " |")
    return "\n".join(lines)


def render() -> str:
    parts = [HEADER.rstrip(), "## Top level\n\n" + table(Recipe)]
    for name, field in Recipe.model_fields.items():
        section = _section(field.annotation)
        if section:
            required = " (required)" if field.is_required() else ""
            intro = f"{section.__doc__.strip()}\n\n" if section.__doc__ and section.__doc__ != BaseModel.__doc__ else ""
            parts.append(f"## `{name}`{required}\n\n{intro}{table(section, name + '.')}")
    renamed = "\n".join(f"- `{old}` is now `{new}`" for old, new in RENAMED.items())
    parts.append(f"## Renamed keys\n\nThe old spelling is still read, and each use prints one line naming the new one.\n\n{renamed}")
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    print(render(), end="")

"""Read a recipe: YAML with `_base_` inheritance, `--set` overrides, then schema validation.

Every key remembers the file (or `--set`) that gave it its value, so a validation error can name the file.
"""
import difflib
from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import FastftError
from .schema import Recipe

BASE_KEY = "_base_"
SET_SOURCE = "--set"


class RecipeError(FastftError):
    """All problems of one recipe, reported together."""

    def __init__(self, problems: list[str]):
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"the recipe has {len(problems)} problem(s):\n{lines}")

    def __str__(self) -> str:
        return self.message


def load_recipe(path: str | Path, overrides: Iterable[str] = ()) -> Recipe:
    data, sources = read_layers(Path(path))
    for item in overrides:
        apply_override(data, sources, item)
    return validate(data, sources, top_file=str(path))


def read_layers(path: Path, _chain: tuple = ()) -> tuple[dict, dict]:
    """Merge `path` over its `_base_` chain. Returns the merged dict and {dotted key: source file}."""
    path = path.resolve()
    if path in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, path))
        raise FastftError("`_base_` inheritance forms a cycle", where=str(path), hint=f"break the cycle: {cycle}")
    data = _read_yaml(path)
    base_ref = data.pop(BASE_KEY, None)
    merged, sources = {}, {}
    for base in _base_list(base_ref, path):
        base_data, base_sources = read_layers(base, _chain + (path,))
        merged, sources = deep_merge(merged, base_data), {**sources, **base_sources}
    _record_sources(data, str(path), sources)
    return deep_merge(merged, data), sources


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise FastftError("recipe file not found", where=str(path), hint="check the path (relative to where you run fastft)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise FastftError(f"not UTF-8 text ({exc.reason})", where=str(path), hint="save the recipe as UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise FastftError(f"invalid YAML: {problem}", where=where, hint="fix the YAML syntax at that line") from None
    if data is None:
        raise FastftError("the recipe is empty", where=str(path), hint="add at least `experiment`, `model` and `dataset`")
    if not isinstance(data, dict):
        raise FastftError("a recipe must be a YAML mapping of sections", where=str(path), hint="see recipes/base/causal_lm.yaml")
    return data


def _base_list(ref: Any, path: Path) -> list[Path]:
    if ref is None:
        return []
    refs = ref if isinstance(ref, list) else [ref]
    if not all(isinstance(r, str) and r for r in refs):
        raise FastftError("`_base_` must be a file path or a list of file paths", where=str(path), hint="e.g. _base_: base/causal_lm.yaml")
    return [(path.parent / r) for r in refs]


def deep_merge(base: dict, top: dict) -> dict:
    """Mappings merge key by key; anything else (lists included) in `top` replaces what `base` had."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _record_sources(data: dict, source: str, sources: dict, prefix: str = "") -> None:
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        sources[dotted] = source
        if isinstance(value, dict):
            _record_sources(value, source, sources, dotted + ".")


def apply_override(data: dict, sources: dict, item: str) -> None:
    """`a.b.c=value`: the value is parsed as YAML, then typed by the schema at validation."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise FastftError(f"bad override {item!r}", where=SET_SOURCE, hint="write it as section.key=value, e.g. training.learning_rate=1e-4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise FastftError(f"cannot set {key!r}: {part!r} is a value, not a section", where=SET_SOURCE, hint="check the key path")
        node = child
    node[parts[-1]] = value
    sources[key] = SET_SOURCE


def validate(data: dict, sources: dict, top_file: str) -> Recipe:
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError([_describe(err, sources, top_file) for err in exc.errors()]) from None


def _describe(err: dict, sources: dict, top_file: str) -> str:
    loc = [str(p) for p in err["loc"]]
    dotted = ".".join(loc)
    source = _source_of(loc, sources, top_file)
    if err["type"] == "extra_forbidden":
        message = "unknown key"
        guess = difflib.get_close_matches(loc[-1], _field_names(loc[:-1]), n=1, cutoff=0.5)
        if guess:
            message += f"; did you mean {'.'.join(loc[:-1] + guess)!r}?"
        else:
            known = ", ".join(sorted(_field_names(loc[:-1])))
            message += f"; allowed here: {known}" if known else ""
    elif err["type"] == "missing":
        message = "required key is missing"
    else:
        message = f"{err['msg']} (got {err.get('input')!r})"
    return f"{source}: {dotted}: {message}"


def _source_of(loc: list[str], sources: dict, top_file: str) -> str:
    for depth in range(len(loc), 0, -1):
        found = sources.get(".".join(loc[:depth]))
        if found:
            return found
    return top_file


def _field_names(loc: list[str]) -> list[str]:
    model: type[BaseModel] = Recipe
    for part in loc:
        annotation = model.model_fields.get(part)
        if annotation is None or not isinstance(annotation.annotation, type) or not issubclass(annotation.annotation, BaseModel):
            return []
        model = annotation.annotation
    return list(model.model_fields)

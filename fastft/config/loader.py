"""Read a recipe: YAML with `_base_` inheritance, `--set` overrides, then schema validation.

Every key remembers the file (or `--set`) that gave it its value, so a validation error can name the file.

`_base_` paths are relative to the file that names them (absolute paths work too), and every base must lie
inside the top recipe's project (the nearest folder above it that holds a recipes/ folder, else the recipe's
own folder) or in fastft's shipped recipes/ folder, after symlinks are followed: a recipe from elsewhere can
neither read files outside its project nor learn whether they exist.
"""
import difflib
import sys
from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import FastftError
from ..runtime.utf8 import utf8_problem
from .schema import Recipe
from .strict_yaml import Refused, parse

BASE_KEY = "_base_"
# Recipe keys renamed since: the old spelling is still read, and each use of it prints one line saying so.
RENAMED = {"dataset.format_type": "dataset.layout", "evaluation.generate_every_epoch": "evaluation.generate_at_eval"}
SET_SOURCE = "--set"
SHIPPED_RECIPES = Path(__file__).resolve().parents[2] / "recipes"
_SHOWN_CHARS = 80  # of a rejected value, so a huge or multi-line value still gives a one-line problem


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


def read_layers(path: Path, _chain: tuple = (), _roots: tuple = ()) -> tuple[dict, dict]:
    """Merge `path` over its `_base_` chain. Returns the merged dict and {dotted key: source file}."""
    path = path.resolve()
    if path in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, path))
        raise FastftError("`_base_` inheritance forms a cycle", where=str(path), hint=f"break the cycle: {cycle}")
    data = _read_yaml(path)
    _rename_old_keys(data, str(path))
    roots = _roots or base_roots(path)
    base_ref = data.pop(BASE_KEY, None)
    merged, sources = {}, {}
    for base in _base_list(base_ref, path, roots):
        base_data, base_sources = read_layers(base, _chain + (path,), roots)
        merged, sources = deep_merge(merged, base_data), {**sources, **base_sources}
    _record_sources(data, str(path), sources)
    return deep_merge(merged, data), sources


def _renamed(key: str, where: str) -> str:
    """The current name of a dotted recipe key."""
    new = RENAMED.get(key)
    if new is None:
        return key
    print(f"fastft: {where}: recipe key {key} is now called {new}; the old name still works for now", file=sys.stderr)
    return new


def _rename_old_keys(data: dict, where: str) -> None:
    for old, new in RENAMED.items():
        section, name = old.split(".")
        part = data.get(section)
        if isinstance(part, dict) and name in part:
            new_name = _renamed(old, where).split(".")[1]
            if new_name in part:
                raise FastftError(f"{old} and {new} are one setting, given twice", where=where, hint=f"keep {new} only")
            part[new_name] = part.pop(name)


def project_folder(recipe: Path) -> Path:
    """The nearest folder above `recipe` that holds a recipes/ folder, else the recipe's own folder."""
    return next((folder for folder in recipe.parents if (folder / "recipes").is_dir()), recipe.parent)


def base_roots(top_recipe: Path) -> tuple[Path, ...]:
    """The folders a recipe's `_base_` files may come from: its project and fastft's shipped recipes."""
    return (project_folder(top_recipe), *([SHIPPED_RECIPES] if SHIPPED_RECIPES.is_dir() else []))


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise FastftError("recipe file not found", where=str(path), hint="check the path (relative to where you run fastft)")
    raw = path.read_bytes()
    problem = utf8_problem(raw)
    if problem:
        raise FastftError(f"the recipe {problem}", where=str(path), hint="save the recipe as UTF-8")
    try:
        data = parse(raw.decode("utf-8-sig"))
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, path) from None
    if data is None:
        raise FastftError("the recipe is empty", where=str(path), hint="add at least `experiment`, `model` and `dataset`")
    if not isinstance(data, dict):
        raise FastftError("a recipe must be a YAML mapping of sections", where=str(path), hint="see recipes/base/causal_lm.yaml")
    return data


def _yaml_error(exc: yaml.YAMLError, path: Path) -> FastftError:
    mark = getattr(exc, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if isinstance(exc, Refused):
        return FastftError(problem, where=where, hint="write the value out as plain YAML")
    return FastftError(f"invalid YAML: {problem}", where=where, hint="fix the YAML syntax at that line")


def _base_list(ref: Any, path: Path, roots: tuple[Path, ...]) -> list[Path]:
    if ref is None:
        return []
    refs = ref if isinstance(ref, list) else [ref]
    if not all(isinstance(r, str) and r for r in refs):
        raise FastftError("`_base_` must be a file path or a list of file paths", where=str(path), hint="e.g. _base_: base/causal_lm.yaml")
    return [_base_path(r, path, roots) for r in refs]


def _base_path(ref: str, including: Path, roots: tuple[Path, ...]) -> Path:
    base = (including.parent / ref).resolve()
    if not any(base.is_relative_to(root) for root in roots):
        raise FastftError(
            f"`_base_` {_shown(ref)} is outside the recipe's project (it resolves to {base})", where=str(including),
            hint=f"bases must lie under {' or '.join(str(root) for root in roots)}; copy the settings into the project")
    if not base.is_file():
        raise FastftError(f"`_base_` file not found: {base}", where=str(including),
                          hint="the path is relative to the file that names it")
    return base


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
    key = _renamed(key, SET_SOURCE)
    try:
        value = parse(raw) if raw.strip() else ""
    except Refused as exc:
        raise FastftError(f"{_shown(key)}: {exc.problem}", where=SET_SOURCE, hint="write the value out as plain YAML") from None
    except yaml.YAMLError:
        value = raw  # not YAML after all: the text itself, which the schema then types
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
    dotted = ".".join(_shown(p) for p in err["loc"])
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
        # a validator's ValueError arrives as "Value error, <its text>": the text alone is the message
        message = f"{err['msg'].removeprefix('Value error, ')} (got {_clipped(repr(err.get('input')))})"
    return f"{source}: {dotted}: {message}"


def _shown(value) -> str:
    """A key or path as the user wrote it, unless it holds line breaks or other unprintable characters."""
    text = str(value)
    return text if text.isprintable() and text else repr(text)


def _clipped(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else f"{text[:_SHOWN_CHARS]}... ({len(text):,} characters)"


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

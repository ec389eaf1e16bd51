"""Load a local data file through `datasets` and check it has what the task needs."""
import difflib
from pathlib import Path

from ..errors import FastftError

_BUILDERS = {".csv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def resolve_data_path(value: str, recipe_file: Path | None) -> Path:
    """Relative paths are taken from the working directory, then from the recipe's folder and its parents."""
    path = Path(value)
    if path.is_absolute() or path.exists() or recipe_file is None:
        return path
    for folder in Path(recipe_file).resolve().parents:
        if (folder / path).exists():
            return folder / path
    return path


def load_rows(path: Path, label: str):
    """A `datasets.Dataset` of the file's rows; `label` names the split in messages (e.g. dataset.train)."""
    import datasets

    if not path.exists():
        raise FastftError(f"{label}: file not found: {path}", hint="check the path in the recipe (relative to where you run fastft)")
    builder = "arrow" if path.is_dir() else _BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise FastftError(
            f"{label}: unsupported file type {path.suffix!r}: {path}",
            hint=f"use one of {', '.join(_BUILDERS)} or a saved datasets folder",
        )
    try:
        if builder == "arrow":
            rows = datasets.load_from_disk(str(path))
        else:
            rows = datasets.load_dataset(builder, data_files=str(path), split="train")
    except Exception as exc:  # datasets/pyarrow raise many types for a bad file; all mean the same to the user
        raise FastftError(f"{label}: cannot read {path}: {str(exc).splitlines()[0][:300]}", hint="check the file's format and encoding (UTF-8)") from None
    if len(rows) == 0:
        raise FastftError(f"{label}: {path} has no rows", hint="point the recipe at a file with data")
    return rows


def check_columns(rows, required: list[str], path: Path, label: str) -> None:
    missing = [col for col in required if col not in rows.column_names]
    if not missing:
        return
    hints = []
    for col in missing:
        guess = difflib.get_close_matches(col, rows.column_names, n=1, cutoff=0.5)
        hints.append(f"{col!r} -> did you mean {guess[0]!r}?" if guess else f"{col!r}")
    raise FastftError(
        f"{label}: {path} lacks column(s) {', '.join(hints)}; it has {', '.join(rows.column_names)}",
        hint="rename the column in the file or map it with dataset.columns in the recipe",
    )


def check_strings(row: dict, columns: list[str], row_name: str, path: Path, label: str) -> None:
    for col in columns:
        value = row.get(col)
        if value is not None and not isinstance(value, str):
            raise FastftError(
                f"{label}: {path}, {row_name}: column {col!r} holds {type(value).__name__} {str(value)[:40]!r}, not text",
                hint="make every value of that column a string",
            )

"""Load a local data file through `datasets`, check it has what the task needs, and name rows in messages."""
import csv
import difflib
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import FastftError

_BUILDERS = {".csv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


@dataclass
class Source:
    rows: object  # datasets.Dataset
    path: Path
    label: str  # the recipe key that named the file, e.g. dataset.train
    lines: list[int] | None = None  # JSONL: the file line of each row (blank lines are skipped)

    def where(self, index: int) -> str:
        place = f"line {self.lines[index]}" if self.lines else f"row {index + 1}"
        return f"{self.label}: {self.path}, {place}"


def resolve_data_path(value: str, recipe_file: Path | None) -> Path:
    """Relative paths are taken from the working directory, then from the recipe's folder and its parents."""
    path = Path(value)
    if path.is_absolute() or path.exists() or recipe_file is None:
        return path
    for folder in Path(recipe_file).resolve().parents:
        if (folder / path).exists():
            return folder / path
    return path


def load_rows(path: Path, label: str) -> Source:
    if not path.exists():
        raise FastftError(f"{label}: file not found: {path}", hint="check the path in the recipe (relative to where you run fastft)")
    builder = "arrow" if path.is_dir() else _BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise FastftError(
            f"{label}: unsupported file type {path.suffix!r}: {path}",
            hint=f"use one of {', '.join(_BUILDERS)} or a saved datasets folder",
        )
    # datasets reports a bad JSONL line without its number, and an empty file as a generic failure: check first.
    try:
        lines = _jsonl_lines(path, label) if path.suffix.lower() == ".jsonl" else None
        header = _csv_header(path) if builder == "csv" else None
    except UnicodeDecodeError as exc:
        raise FastftError(f"{label}: {path} is not UTF-8 text (byte {exc.start})", hint="save the file as UTF-8") from None
    if lines == [] or header == []:
        raise _no_rows(path, label)
    try:
        rows = _load(builder, path, header)
    except Exception as exc:  # datasets/pyarrow raise many types for a bad file; all mean the same to the user
        raise FastftError(f"{label}: cannot read {path}: {str(exc).splitlines()[0][:300]}", hint="check the file's format and encoding (UTF-8)") from None
    if len(rows) == 0:
        raise _no_rows(path, label)
    return Source(rows, path, label, lines)


def _no_rows(path: Path, label: str) -> FastftError:
    return FastftError(f"{label}: {path} has no rows", hint="point the recipe at a file with data")


def _load(builder: str, path: Path, header: list[str] | None):
    import datasets

    if builder == "arrow":
        return datasets.load_from_disk(str(path))
    options = {}
    if builder == "csv":
        # CSV has no types: read every column as text, so an answer like "1987" or "NA" stays what it says.
        options = {"features": datasets.Features({name: datasets.Value("string") for name in header}), "keep_default_na": False}
    shown = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # fastft shows its own progress; datasets' bars only add noise
    try:
        return datasets.load_dataset(builder, data_files=str(path), split="train", **options)
    finally:
        if shown:
            datasets.enable_progress_bars()


def _csv_header(path: Path) -> list[str]:
    """The header row, or [] when the file has no data row under it."""
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        return header if next(reader, None) is not None else []


def _jsonl_lines(path: Path, label: str) -> list[int]:
    numbers = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise FastftError(f"{label}: {path}, line {number}: not valid JSON ({exc.msg}, column {exc.colno})",
                                  hint="each line of a .jsonl file must be one JSON object") from None
            if not isinstance(value, dict):
                raise FastftError(f"{label}: {path}, line {number}: a JSON {type(value).__name__}, not an object",
                                  hint="each line of a .jsonl file must be one JSON object")
            numbers.append(number)
    return numbers


def check_columns(source: Source, required: list[str]) -> None:
    names = source.rows.column_names
    missing = [col for col in required if col not in names]
    if not missing:
        return
    hints = []
    for col in missing:
        guess = difflib.get_close_matches(col, names, n=1, cutoff=0.5)
        hints.append(f"{col!r} -> did you mean {guess[0]!r}?" if guess else f"{col!r}")
    raise FastftError(
        f"{source.label}: {source.path} lacks column(s) {', '.join(hints)}; it has {', '.join(names)}",
        hint="rename the column in the file or map it with dataset.columns in the recipe",
    )


def check_strings(source: Source, row: dict, index: int, columns: list[str]) -> None:
    for col in columns:
        value = row.get(col)
        if value is not None and not isinstance(value, str):
            raise FastftError(
                f"{source.where(index)}: column {col!r} holds {type(value).__name__} {str(value)[:40]!r}, not text",
                hint="make every value of that column a string",
            )

"""Load a local data file through `datasets`, check it has what the task needs, and name rows in messages."""
import csv
import difflib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..config.schema import DATA_PATHS
from ..errors import FastftError
from ..runtime.utf8 import file_head_problem, not_utf8

_BUILDERS = {".csv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
_JSON_KINDS = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}
_UTF8_HINT = "save the file as UTF-8"


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
    """A recipe's data path: absolute, or {DATA_PATHS}."""
    path = Path(value)
    if path.is_absolute() or path.exists() or recipe_file is None:
        return path
    for folder in Path(recipe_file).resolve().parents:
        if (folder / path).exists():
            return folder / path
    return path


def load_rows(path: Path, label: str) -> Source:
    if not path.exists():
        raise FastftError(f"{label}: file not found: {path}", hint=f"check the path in the recipe ({DATA_PATHS})")
    builder = _builder(path, label)
    # datasets reports a bad JSON line without its number, a wrong encoding or an empty file as a generic
    # failure, and takes JSON that is not a list of objects in odd ways: check text files first.
    lines = header = None
    if builder != "arrow":
        problem = file_head_problem(path)
        if problem:
            raise FastftError(f"{label}: {path} {problem}", hint=_UTF8_HINT)
    try:
        if path.suffix.lower() == ".jsonl":
            lines = _jsonl_lines(path, label)
        elif path.suffix.lower() == ".json":
            lines = _json_rows(path, label)
        elif builder == "csv":
            header = _csv_header(path, label)
    except UnicodeDecodeError as exc:
        raise FastftError(f"{label}: {path} {not_utf8(exc)}", hint=_UTF8_HINT) from None
    if lines == [] or header == []:
        raise _no_rows(path, label)
    try:
        rows = _load(builder, path, header)
    except Exception as exc:  # datasets/pyarrow raise many types for a bad file; all mean the same to the user
        raise FastftError(f"{label}: cannot read {path}: {_first_line(_root_cause(exc))}", hint="check the file's format and encoding (UTF-8)") from None
    if len(rows) == 0:
        raise _no_rows(path, label)
    return Source(rows, path, label, lines)


def _builder(path: Path, label: str) -> str:
    if path.is_dir():
        if not (path / "state.json").is_file():
            raise FastftError(f"{label}: {path} is a folder but not a saved datasets folder (it has no state.json)",
                              hint="point to a data file, or to a folder written by datasets' save_to_disk (one split)")
        return "arrow"
    builder = _BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise FastftError(
            f"{label}: unsupported file type {path.suffix!r}: {path}",
            hint=f"use one of {', '.join(_BUILDERS)} or a saved datasets folder",
        )
    return builder


def _root_cause(exc: BaseException) -> BaseException:
    """datasets wraps the parser's error in "An error occurred while generating the dataset"; the parser's says more."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


def _no_rows(path: Path, label: str) -> FastftError:
    return FastftError(f"{label}: {path} has no rows", hint="point the recipe at a file with data")


def _load(builder: str, path: Path, header: list[str] | None):
    import datasets

    if builder == "arrow":
        return datasets.load_from_disk(str(path))
    from pandas.errors import ParserWarning

    options = {}
    if builder == "csv":
        # CSV has no types: read every column as text, so an answer like "1987" or "NA" stays what it says.
        # index_col=False: when every row has one field more than the header, pandas would otherwise make the
        # first field an index and silently shift every column by one.
        options = {"features": datasets.Features({name: datasets.Value("string") for name in header}), "keep_default_na": False,
                   "index_col": False}
    shown, verbosity = datasets.is_progress_bar_enabled(), datasets.logging.get_verbosity()
    datasets.disable_progress_bars()  # fastft shows its own progress; datasets' bars only add noise
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # a parse error is logged as well as raised; fastft reports it once
    try:
        with warnings.catch_warnings():
            # With index_col=False pandas drops the extra fields with only this warning: they are lost data.
            warnings.simplefilter("error", ParserWarning)
            return datasets.load_dataset(builder, data_files=str(path), split="train", **options)
    finally:
        datasets.logging.set_verbosity(verbosity)
        if shown:
            datasets.enable_progress_bars()


def _csv_header(path: Path, label: str) -> list[str]:
    """The header row, or [] when only blank lines follow it. A UTF-8 byte-order mark is not part of the first name."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader, [])
        except csv.Error as exc:
            raise FastftError(f"{label}: {path}, line {reader.line_num}: cannot read the CSV header ({exc})",
                              hint="the first line must name the columns, separated by commas") from None
        # The rest is read as plain lines: a long text field there is data, and csv's field size limit would refuse it.
        has_rows = any(line.strip() for line in f)
    _check_header(header, path, label)
    return header if has_rows else []


def _check_header(header: list[str], path: Path, label: str) -> None:
    """pandas renames a repeated or blank column name, and the file's columns then no longer match its header."""
    for number, name in enumerate(header, 1):
        if not name.strip():
            raise FastftError(f"{label}: {path}: column {number} of the header has no name", hint="name every column")
        if header.index(name) < number - 1:
            raise FastftError(f"{label}: {path}: the header names column {name!r} twice", hint="give every column its own name")


def _jsonl_lines(path: Path, label: str) -> list[int]:
    """The line number of every row, after checking that each non-blank line is one JSON object."""
    numbers = []
    with path.open(encoding="utf-8-sig") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise FastftError(f"{label}: {path}, line {number}: not valid JSON ({exc.msg}, column {exc.colno})",
                                  hint="each line of a .jsonl file must be one JSON object") from None
            except RecursionError:
                raise _too_deep(f"{label}: {path}, line {number}") from None
            _check_object(value, f"{label}: {path}, line {number}", "each line of a .jsonl file must be one JSON object")
            numbers.append(number)
    return numbers


def _json_rows(path: Path, label: str) -> list[int] | None:
    """Check that a .json file holds a list of objects. One object per line (JSON lines) is read like .jsonl,
    and then its line numbers are returned; for a list, None."""
    hint = "a .json file must hold a list of objects, [{...}, {...}] (or one object per line)"
    try:
        value = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # more than one value: JSON lines
            return _jsonl_lines(path, label)
        raise FastftError(f"{label}: {path}, line {exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno})", hint=hint) from None
    except RecursionError:
        raise _too_deep(f"{label}: {path}") from None
    if not isinstance(value, list):
        raise FastftError(f"{label}: {path}: a .json file must hold a list of objects, not a JSON {_JSON_KINDS[type(value)]}", hint=hint)
    for number, item in enumerate(value, 1):
        _check_object(item, f"{label}: {path}, item {number}", hint)
    return None if value else []


def _too_deep(where: str) -> FastftError:
    # Python's json parser recurses once per nesting level; rows of training data are a few levels deep.
    return FastftError(f"{where}: the JSON is nested too deeply to read", hint="rows must be flat objects of text fields")


def _check_object(value, where: str, hint: str) -> None:
    if not isinstance(value, dict):
        raise FastftError(f"{where} is a JSON {_JSON_KINDS[type(value)]}, not an object", hint=hint)
    if not value:
        raise FastftError(f"{where} is an empty JSON object", hint=hint)


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

"""The interface every task format implements."""
import difflib
from dataclasses import dataclass
from typing import Optional

from ...errors import FastftError


@dataclass(frozen=True)
class Turn:
    role: str  # system, user or assistant
    content: str


@dataclass(frozen=True)
class Example:
    """One training example before templating.

    Single-turn tasks fill `instruction` (kept whole) and `body` (cut from the left when the prompt is too long).
    Chat fills `history` instead: every turn before the final answer, earlier assistant turns included.
    """

    id: str
    instruction: Optional[str]
    body: str
    answer: Optional[str]
    history: tuple[Turn, ...] = ()


class RowError(ValueError):
    """A problem with one row's content; the pipeline adds the file and row to the message."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


class Task:
    """Maps the task's fields to file columns (overridable by `dataset.columns`) and builds Examples."""

    fields: dict[str, str] = {}  # task field -> default column name
    optional: tuple[str, ...] = ()
    answer_fields: tuple[str, ...] = ()  # what a file to predict on may lack
    id_column: Optional[str] = None
    instructions: tuple[str, ...] = ()  # phrasings; the first is the default, all are used by augmentation

    def __init__(self, columns: dict[str, str]):
        unknown = sorted(set(columns) - set(self.fields))
        if unknown:
            guesses = [difflib.get_close_matches(name, self.fields, n=1) for name in unknown]
            suggestion = "; ".join(f"{name!r} -> did you mean {g[0]!r}?" for name, g in zip(unknown, guesses) if g)
            raise FastftError(
                f"dataset.columns names unknown field(s) {unknown} for this task" + (f" ({suggestion})" if suggestion else ""),
                hint=f"the task's fields are: {', '.join(self.fields)}",
            )
        self.columns = {**self.fields, **columns}

    def required_columns(self) -> list[str]:
        return [col for field, col in self.columns.items() if field not in self.optional]

    def prompt_columns(self) -> list[str]:
        """The required columns a row to predict on must have: all but the answer's."""
        return [col for field, col in self.columns.items() if field not in self.optional and field not in self.answer_fields]

    def text_columns(self) -> list[str]:
        """Columns whose values must be strings (checked per row before `build`)."""
        return list(self.columns.values())

    def build(self, row: dict, index: int, instruction: Optional[str]) -> Example:
        """Raises RowError for content the task cannot use."""
        raise NotImplementedError

    def build_for_prediction(self, row: dict, index: int, instruction: Optional[str]) -> Example:
        """Like `build`, for a row that may lack the answer (its Example's answer is then None)."""
        return self.build(row, index, instruction)

    def row_id(self, row: dict, index: int) -> str:
        value = row.get(self.id_column) if self.id_column else None
        return str(value) if value not in (None, "") else f"row {index + 1}"

"""The interface every task format implements."""
from dataclasses import dataclass
from typing import Optional

from ...errors import FastftError


@dataclass(frozen=True)
class Example:
    """One training example before templating. `body` is the part cut from the left when the prompt is too long."""

    id: str
    instruction: str
    body: str
    answer: Optional[str]


class TaskFormat:
    """Maps the task's fields to file columns (overridable by `dataset.columns`) and builds Examples."""

    fields: dict[str, str] = {}  # task field -> default column name
    optional: tuple[str, ...] = ()
    id_column: Optional[str] = None
    instructions: tuple[str, ...] = ()  # phrasings; the first is the default, all are used by augmentation

    def __init__(self, columns: dict[str, str]):
        unknown = sorted(set(columns) - set(self.fields))
        if unknown:
            raise FastftError(
                f"dataset.columns names unknown field(s) {unknown} for this task",
                hint=f"the task's fields are: {', '.join(self.fields)}",
            )
        self.columns = {**self.fields, **columns}

    def required_columns(self) -> list[str]:
        return [col for field, col in self.columns.items() if field not in self.optional]

    def build(self, row: dict, index: int, instruction: str) -> Example:
        raise NotImplementedError

    def row_id(self, row: dict, index: int) -> str:
        value = row.get(self.id_column) if self.id_column else None
        return str(value) if value not in (None, "") else f"row {index + 2}"

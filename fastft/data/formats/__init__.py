"""Task formats: each turns one data row into an Example (instruction, truncatable body, answer)."""
from .base import Example, TaskFormat
from .instruction import InstructionFormat
from .summary import SummaryFormat

FORMATS: dict[str, type[TaskFormat]] = {"summary": SummaryFormat, "instruction": InstructionFormat}


def get_format(task: str, columns: dict[str, str]) -> TaskFormat:
    return FORMATS[task](columns)


__all__ = ["Example", "FORMATS", "TaskFormat", "get_format"]

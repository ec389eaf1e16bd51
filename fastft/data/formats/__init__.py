"""Task formats: each turns one data row into an Example (instruction, truncatable body, answer; or a chat history)."""
from .base import Example, RowError, TaskFormat, Turn
from .chat import ChatFormat
from .classification import ClassificationFormat
from .instruction import InstructionFormat
from .qa import QaFormat
from .summary import SummaryFormat

FORMATS: dict[str, type[TaskFormat]] = {
    "summary": SummaryFormat,
    "instruction": InstructionFormat,
    "qa": QaFormat,
    "classification": ClassificationFormat,
    "chat": ChatFormat,
}


def get_format(task: str, columns: dict[str, str]) -> TaskFormat:
    return FORMATS[task](columns)


__all__ = ["Example", "FORMATS", "RowError", "TaskFormat", "Turn", "get_format"]

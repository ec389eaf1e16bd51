"""Task formats: each turns one data row into an Example (instruction, truncatable body, answer; or a chat history)."""
from .base import Example, RowError, Task, Turn
from .chat import ChatTask
from .classification import ClassificationTask
from .instruction import InstructionTask
from .qa import QaTask
from .summary import SummaryTask

TASKS: dict[str, type[Task]] = {
    "summary": SummaryTask,
    "instruction": InstructionTask,
    "qa": QaTask,
    "classification": ClassificationTask,
    "chat": ChatTask,
}


def get_task(task: str, columns: dict[str, str]) -> Task:
    return TASKS[task](columns)


__all__ = ["Example", "TASKS", "RowError", "Task", "Turn", "get_task"]

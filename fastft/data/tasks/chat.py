"""Conversations: a `messages` list of {role, content} turns. Every assistant turn is trained, system/user turns not.

The last assistant turn is the answer (kept whole, like every task's answer); the turns before it are the history,
which left-truncation shortens from the oldest turn on. Turns after the last assistant turn cannot be trained
and are left out.
"""
from .base import Example, RowError, Task, Turn

ROLES = ("system", "user", "assistant")


class ChatTask(Task):
    fields = {"messages": "messages"}
    id_column = "id"

    def text_columns(self) -> list[str]:
        return []  # the messages column is a list; `_turns` checks each turn's content

    def build(self, row: dict, index: int, instruction=None) -> Example:
        turns = self._turns(row[self.columns["messages"]])
        last = max((i for i, turn in enumerate(turns) if turn.role == "assistant"), default=None)
        if last is None:
            raise RowError("the conversation has no assistant turn, so nothing in it would be trained",
                           hint="add an assistant turn, or remove the row")
        return Example(id=self.row_id(row, index), instruction=None, body="", answer=turns[last].content, history=tuple(turns[:last]))

    def build_for_prediction(self, row: dict, index: int, instruction=None) -> Example:
        """A conversation that ends on a user (or system) turn is a prompt: its next reply is what to predict."""
        turns = self._turns(row[self.columns["messages"]])
        if turns[-1].role == "assistant":
            return self.build(row, index)
        return Example(id=self.row_id(row, index), instruction=None, body="", answer=None, history=tuple(turns))

    def _turns(self, messages) -> list[Turn]:
        column = self.columns["messages"]
        if not isinstance(messages, list) or not messages:
            raise RowError(f"column {column!r} must be a non-empty list of {{role, content}} turns, not {str(messages)[:40]!r}")
        turns = []
        for number, message in enumerate(messages, 1):
            role = message.get("role") if isinstance(message, dict) else None
            content = message.get("content") if isinstance(message, dict) else None
            if role not in ROLES:
                raise RowError(f"{column} turn {number}: role {role!r} is not one of {', '.join(ROLES)}")
            if not isinstance(content, str):
                raise RowError(f"{column} turn {number} ({role}): content holds {type(content).__name__} {str(content)[:40]!r}, not text",
                               hint="make every turn's content a string")
            turns.append(Turn(role, content))
        return turns

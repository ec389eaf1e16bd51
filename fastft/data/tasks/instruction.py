"""Alpaca-style rows: instruction, optional input, response (the seed's Solidity file has no input column)."""
from .base import Example, Task


class InstructionTask(Task):
    fields = {"instruction": "instruction", "input": "input", "response": "response"}
    optional = ("input",)
    answer_fields = ("response",)

    def build(self, row: dict, index: int, instruction: str) -> Example:
        return Example(
            id=self.row_id(row, index),
            instruction=row[self.columns["instruction"]],
            body=row.get(self.columns["input"]) or "",
            answer=row.get(self.columns["response"]),
        )

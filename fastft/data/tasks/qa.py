"""Korean extractive QA: context, question, answer. The context is what left-truncation shortens; the question stays."""
from .base import Example, Task


class QaTask(Task):
    fields = {"context": "context", "question": "question", "answer": "answer"}
    id_column = "id"
    answer_fields = ("answer",)
    instructions = (
        "다음 글을 읽고 질문에 답하세요.",
        "아래 지문을 바탕으로 질문에 짧게 답해 주세요.",
        "지문에서 근거를 찾아 질문에 대한 답을 쓰세요.",
        "글의 내용에 근거하여 다음 질문에 답하시오.",
        "주어진 글을 참고해서 질문의 답만 간결하게 말해 주세요.",
    )

    def build(self, row: dict, index: int, instruction: str) -> Example:
        # The question sits with the instruction, before the context, so cutting a long context never loses it.
        return Example(
            id=self.row_id(row, index),
            instruction=f"{instruction}\n질문: {row[self.columns['question']]}",
            body=row[self.columns["context"]],
            answer=row.get(self.columns["answer"]),
        )

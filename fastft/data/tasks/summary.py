"""Korean dialogue summarization in the competition's CSV schema: fname, dialogue, summary, topic."""
from .base import Example, Task


class SummaryTask(Task):
    fields = {"dialogue": "dialogue", "summary": "summary"}
    id_column = "fname"
    answer_fields = ("summary",)
    instructions = (
        "다음 대화를 읽고 핵심 내용을 간결하게 요약하세요.",
        "아래 대화의 주요 내용을 한두 문장으로 정리해 주세요.",
        "이 대화에서 누가 무엇을 말했고 어떤 결론이 났는지 요약하세요.",
        "다음 대화 내용을 짧은 요약문으로 작성하세요.",
        "대화를 읽고 화자들의 요청과 결과가 드러나도록 요약해 주세요.",
    )

    def build(self, row: dict, index: int, instruction: str) -> Example:
        return Example(
            id=self.row_id(row, index),
            instruction=instruction,
            body=row[self.columns["dialogue"]],
            answer=row.get(self.columns["summary"]),
        )

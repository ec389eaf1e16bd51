"""Solidity code -> SWC category and explanation (columns input/code, category, response).

The answer always begins with the category (e.g. `SWC-107`), so the first generated tokens are the class and
accuracy can be read off the first line; a response that already starts with it is used as it is,
and a row without a response is trained on the category alone.
"""
from .base import Example, Task


class ClassificationTask(Task):
    fields = {"code": "input", "category": "category", "explanation": "response"}
    optional = ("explanation",)
    answer_fields = ("category", "explanation")
    id_column = "id"
    # Phrasings of our own, not the file's instruction column, so augmentation has five; all allow "safe".
    instructions = (
        "다음 Solidity 코드의 취약점을 SWC 분류로 판별하고 이유를 설명하세요. 취약점이 없으면 safe로 답하세요.",
        "아래 스마트 컨트랙트 코드에 어떤 SWC 취약점이 있는지 분류하고 간단히 설명해 주세요. 없다면 safe라고 답해 주세요.",
        "이 Solidity 코드를 분석해 해당하는 SWC 번호와 그 근거를 쓰세요. 안전한 코드라면 safe로 답하세요.",
        "다음 코드의 보안 약점을 SWC 레지스트리 기준으로 분류하고 설명하시오. 약점이 없으면 safe로 표시하시오.",
        "주어진 컨트랙트 코드가 어떤 SWC 유형에 해당하는지 답하고 이유를 짧게 덧붙이세요. 해당 사항이 없으면 safe입니다.",
    )

    def build(self, row: dict, index: int, instruction: str) -> Example:
        category = row.get(self.columns["category"])
        explanation = row.get(self.columns["explanation"])
        if not explanation or not category or explanation.startswith(category):
            answer = explanation or category
        else:
            answer = f"{category}: {explanation}"
        return Example(id=self.row_id(row, index), instruction=instruction, body=row[self.columns["code"]], answer=answer)

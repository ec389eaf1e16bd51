"""Rendered token sequences match each family's documented turn layout, written out here by hand.

Llama-3: https://www.llama.com/docs/model-cards-and-prompt-formats/meta-llama-3/ (header ids, <|eot_id|>).
ChatML (Qwen): <|im_start|>role\\n...<|im_end|>\\n. Gemma: <start_of_turn>user|model\\n...<end_of_turn>\\n, no system
role (a system prompt opens the first user turn).
"""
import pytest

from fastft.data.encode import Encoder, EncodeStats
from fastft.data.render import Renderer
from fastft.data.tasks import Example, Turn
from tests.tokenizers import real_tokenizer

SYSTEM, Q1, A1, Q2, A2 = "당신은 친절한 비서입니다.", "서울의 인구는?", "약 940만 명입니다.", "부산은요?", "약 330만 명입니다."
CHAT = Example("c1", None, "", A2, history=(Turn("system", SYSTEM), Turn("user", Q1), Turn("assistant", A1), Turn("user", Q2)))

LAYOUTS = {
    "llama3": (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" + SYSTEM + "<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n" + Q1 + "<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n" + A1 + "<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n" + Q2 + "<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n" + A2 + "<|eot_id|>"
    ),
    "qwen": (
        "<|im_start|>system\n" + SYSTEM + "<|im_end|>\n"
        "<|im_start|>user\n" + Q1 + "<|im_end|>\n"
        "<|im_start|>assistant\n" + A1 + "<|im_end|>\n"
        "<|im_start|>user\n" + Q2 + "<|im_end|>\n"
        "<|im_start|>assistant\n" + A2 + "<|im_end|>"
    ),
    "gemma3": (
        "<bos><start_of_turn>user\n" + SYSTEM + "\n\n" + Q1 + "<end_of_turn>\n"
        "<start_of_turn>model\n" + A1 + "<end_of_turn>\n"
        "<start_of_turn>user\n" + Q2 + "<end_of_turn>\n"
        "<start_of_turn>model\n" + A2 + "<end_of_turn>"
    ),
}
# Tokens that must each be one id, and how often the layout uses them.
SPECIALS = {
    "llama3": {"<|begin_of_text|>": 1, "<|start_header_id|>": 5, "<|end_header_id|>": 5, "<|eot_id|>": 5},
    "qwen": {"<|im_start|>": 5, "<|im_end|>": 5},
    "gemma3": {"<bos>": 1, "<start_of_turn>": 4, "<end_of_turn>": 4},
}


def encode(family, example, layout="chat", system=None):
    tokenizer = real_tokenizer(family)
    return tokenizer, Encoder(Renderer(tokenizer, layout, system), 1024, 200).encode(example, EncodeStats())


@pytest.mark.parametrize("family", sorted(LAYOUTS))
def test_multi_turn_chat_renders_the_official_layout(family):
    tokenizer, record = encode(family, CHAT)
    assert tokenizer.decode(record["input_ids"]) == LAYOUTS[family]
    for token, count in SPECIALS[family].items():
        assert record["input_ids"].count(tokenizer.convert_tokens_to_ids(token)) == count, token


USER = "다음 대화를 요약하세요.\n\n#Person1#: 안녕하세요."  # instruction, blank line, body
ANSWER = "인사를 나눈다."
SINGLE_TURN = {
    "llama3": (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" + SYSTEM + "<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n" + USER + "<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n" + ANSWER + "<|eot_id|>"
    ),
    "qwen": "<|im_start|>system\n" + SYSTEM + "<|im_end|>\n<|im_start|>user\n" + USER + "<|im_end|>\n<|im_start|>assistant\n" + ANSWER + "<|im_end|>",
    "gemma3": "<bos><start_of_turn>user\n" + SYSTEM + "\n\n" + USER + "<end_of_turn>\n<start_of_turn>model\n" + ANSWER + "<end_of_turn>",
}


@pytest.mark.parametrize("family", sorted(SINGLE_TURN))
def test_single_turn_task_is_one_user_turn_with_the_recipe_system_prompt(family):
    example = Example("s1", "다음 대화를 요약하세요.", "#Person1#: 안녕하세요.", ANSWER)
    tokenizer, record = encode(family, example, system=SYSTEM)
    assert tokenizer.decode(record["input_ids"]) == SINGLE_TURN[family]


def test_instruction_layout_is_the_seed_alpaca_layout():
    example = Example("i1", "다음 대화를 요약하세요.", "#Person1#: 안녕하세요.", "인사를 나눈다.")
    tokenizer, record = encode("llama3", example, layout="instruction")
    assert tokenizer.decode(record["input_ids"]) == (
        "<|begin_of_text|>### Instruction:\n다음 대화를 요약하세요.\n\n### Input:\n#Person1#: 안녕하세요.\n\n### Response:\n인사를 나눈다.<|end_of_text|>"
    )

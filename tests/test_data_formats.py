"""Every task format on the three real tokenizers: exactly the answers and their end-of-turn tokens are trained."""
import pytest

from fastft.data.encode import Encoder, EncodeStats
from fastft.data.render import Renderer
from fastft.data.tasks import get_task
from tests.tokenizers import family_tokenizer, labelled_spans  # noqa: F401  (fixture)

END_OF_TURN = {"qwen": "<|im_end|>", "llama3": "<|eot_id|>", "gemma3": "<end_of_turn>"}
EOS = {"qwen": "<|im_end|>", "llama3": "<|end_of_text|>", "gemma3": "<eos>"}

ROWS = {
    "summary": {
        "fname": "train_7",
        "dialogue": "#Person1#: 내일 회의가 몇 시죠?\n#Person2#: 오전 10시에 3층 회의실에서 해요.",
        "summary": "#Person2#는 #Person1#에게 내일 회의가 오전 10시 3층 회의실에서 열린다고 알려준다.",
    },
    "instruction": {"instruction": "다음 함수의 시간 복잡도를 말하세요.", "input": "def f(n): return sum(range(n))", "response": "O(n)입니다."},
    "qa": {
        "id": "qa_1",
        "context": "세종은 1443년에 훈민정음을 창제하였고, 3년 뒤인 1446년에 이를 반포하였다.",
        "question": "훈민정음을 반포한 해는 언제인가?",
        "answer": "1446년",
    },
    "classification": {
        "id": "swc_1",
        "input": "function withdraw() public {\n    (bool ok, ) = msg.sender.call{value: balances[msg.sender]}(\"\");\n    balances[msg.sender] = 0;\n}",
        "category": "SWC-107",
        "response": "외부 호출 뒤에 잔액을 0으로 바꾸므로 재진입(reentrancy)에 취약합니다.",
    },
    "chat": {
        "id": "chat_1",
        "messages": [
            {"role": "system", "content": "당신은 친절한 비서입니다."},
            {"role": "user", "content": "서울의 인구는?"},
            {"role": "assistant", "content": "약 940만 명입니다."},
            {"role": "user", "content": "부산은요?"},
            {"role": "assistant", "content": "약 330만 명입니다."},
        ],
    },
}
# What each format must train, written out by hand: the classification answer leads with its category.
ANSWERS = {
    "summary": [ROWS["summary"]["summary"]],
    "instruction": ["O(n)입니다."],
    "qa": ["1446년"],
    "classification": ["SWC-107: 외부 호출 뒤에 잔액을 0으로 바꾸므로 재진입(reentrancy)에 취약합니다."],
    "chat": ["약 940만 명입니다.", "약 330만 명입니다."],
}


def build(task: str, row=None, instruction_index=0):
    fmt = get_task(task, {})
    instruction = fmt.instructions[instruction_index] if fmt.instructions else None
    return fmt.build(row or ROWS[task], 0, instruction)


@pytest.mark.parametrize("task", sorted(ROWS))
def test_chat_trains_exactly_the_answers_and_end_of_turn(family_tokenizer, task):
    family, tokenizer = family_tokenizer
    record = Encoder(Renderer(tokenizer, "chat"), 1024, 200).encode(build(task), EncodeStats())
    assert labelled_spans(tokenizer, record) == [answer + END_OF_TURN[family] for answer in ANSWERS[task]]
    assert record["input_ids"][-1] == tokenizer.convert_tokens_to_ids(END_OF_TURN[family])


@pytest.mark.parametrize("task", ["summary", "instruction", "qa", "classification"])
def test_instruction_layout_trains_exactly_the_answer_and_eos(family_tokenizer, task):
    family, tokenizer = family_tokenizer
    record = Encoder(Renderer(tokenizer, "instruction"), 1024, 200).encode(build(task), EncodeStats())
    assert labelled_spans(tokenizer, record) == [ANSWERS[task][0] + EOS[family]]
    assert record["input_ids"][-1] == tokenizer.eos_token_id


def test_classification_response_that_already_names_the_category_is_kept():
    row = {**ROWS["classification"], "response": "SWC-107 재진입 취약점입니다."}
    assert build("classification", row).answer == "SWC-107 재진입 취약점입니다."
    assert build("classification", {**row, "response": None}).answer == "SWC-107"


def test_qa_keeps_the_question_next_to_the_instruction():
    example = build("qa")
    assert example.instruction == "다음 글을 읽고 질문에 답하세요.\n질문: 훈민정음을 반포한 해는 언제인가?"
    assert example.body == ROWS["qa"]["context"]


def test_chat_turns_after_the_last_answer_are_left_out():
    messages = ROWS["chat"]["messages"] + [{"role": "user", "content": "고마워요"}]
    example = build("chat", {"messages": messages})
    assert example.answer == "약 330만 명입니다." and [t.content for t in example.history][-1] == "부산은요?"


def test_generation_prompt_is_the_training_prefix(family_tokenizer):
    _, tokenizer = family_tokenizer
    encoder = Encoder(Renderer(tokenizer, "chat", "요약 도우미"), 1024, 200)
    for task in ROWS:
        example = build(task)
        record = encoder.encode(example, EncodeStats())
        prompt, truncated = encoder.prompt_ids(example)
        assert not truncated and record["input_ids"][: len(prompt)] == prompt
        assert record["labels"][len(prompt)] != -100 and record["labels"][len(prompt) - 1] == -100

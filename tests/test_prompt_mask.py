"""The label mask and left truncation on a real (tiny, trained-here) BPE tokenizer with Llama-3 chat tokens."""
import pytest

from fastft.data.encode import IGNORE_INDEX, Encoder, EncodeStats
from fastft.data.render import Renderer
from fastft.data.tasks import Example
from tests.factories import tiny_bpe_tokenizer

DIALOGUE = "#Person1#: 내일 몇 시에 만날까요?\n#Person2#: 오후 세 시에 역 앞에서 봐요."
ANSWER = "#Person1#과 #Person2#는 내일 오후 세 시에 역 앞에서 만나기로 한다."


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_bpe_tokenizer()


def encoder(tokenizer, layout="chat", max_prompt=1024, max_answer=200, system=None):
    return Encoder(Renderer(tokenizer, layout, system), max_prompt, max_answer)


def example(body=DIALOGUE, answer=ANSWER):
    return Example(id="t0", instruction="다음 대화를 요약하세요.", body=body, answer=answer)


def labelled(record):
    return [t for t in record["labels"] if t != IGNORE_INDEX]


@pytest.mark.parametrize("layout, end", [("chat", "<|eot_id|>"), ("instruction", "<|end_of_text|>")])
def test_only_answer_and_end_token_are_trained(tokenizer, layout, end):
    enc = encoder(tokenizer, layout)
    record = enc.encode(example(), EncodeStats())
    labels, ids = record["labels"], record["input_ids"]
    first = next(i for i, t in enumerate(labels) if t != IGNORE_INDEX)
    assert all(t == IGNORE_INDEX for t in labels[:first])  # no prompt token has a label
    assert labels[first:] == ids[first:]  # every answer token does, up to the end
    assert tokenizer.decode(labelled(record)) == ANSWER + end
    assert labelled(record)[-1] == tokenizer.convert_tokens_to_ids(end)
    prompt_text = tokenizer.decode(ids[:first])
    assert DIALOGUE in prompt_text and "다음 대화를 요약하세요." in prompt_text


def test_chat_prompt_matches_llama3_layout(tokenizer):
    record = encoder(tokenizer, system="당신은 요약 도우미입니다.").encode(example(), EncodeStats())
    text = tokenizer.decode(record["input_ids"])
    assert text == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n당신은 요약 도우미입니다.<|eot_id|>"
        f"<|start_header_id|>user<|end_header_id|>\n\n다음 대화를 요약하세요.\n\n{DIALOGUE}<|eot_id|>"
        f"<|start_header_id|>assistant<|end_header_id|>\n\n{ANSWER}<|eot_id|>"
    )


def test_long_prompt_is_cut_from_the_left_and_answer_kept(tokenizer):
    turns = "\n".join(f"#Person{1 + i % 2}#: {i}번째 이야기는 아주 길고 자세한 설명을 담고 있습니다." for i in range(60))
    enc = encoder(tokenizer, max_prompt=120, max_answer=60)
    stats = EncodeStats()
    record = enc.encode(example(body=turns), stats)
    assert stats.prompt_truncated == 1
    answer = labelled(record)
    assert tokenizer.decode(answer) == ANSWER + "<|eot_id|>"
    assert len(record["input_ids"]) == 120 + 60  # the answer's unused budget goes to the prompt
    prompt = tokenizer.decode(record["input_ids"][: len(record["input_ids"]) - len(answer)])
    assert prompt.startswith("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n다음 대화를 요약하세요.\n\n")
    assert prompt.endswith("59번째 이야기는 아주 길고 자세한 설명을 담고 있습니다.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    assert "0번째 이야기는" not in prompt.replace("10번째", "").replace("20번째", "")  # the oldest turns are gone


def test_long_answer_is_cut_to_its_budget(tokenizer):
    enc = encoder(tokenizer, max_prompt=200, max_answer=8)
    stats = EncodeStats()
    record = enc.encode(example(answer=ANSWER * 5), stats)
    assert len(labelled(record)) == 8 and stats.answer_truncated == 1


@pytest.mark.parametrize("answer", [None, "", "   "])
def test_empty_answer_is_dropped_and_reported(tokenizer, answer):
    stats = EncodeStats()
    assert encoder(tokenizer).encode(example(answer=answer), stats) is None
    assert stats.dropped == [("t0", "empty answer")]


def test_prompt_frame_over_budget_is_dropped(tokenizer):
    stats = EncodeStats()
    assert encoder(tokenizer, max_prompt=3, max_answer=1).encode(example(), stats) is None
    assert stats.dropped[0][1].startswith("instruction and template alone exceed")


def test_generation_prompt_is_the_training_prompt(tokenizer):
    enc = encoder(tokenizer)
    record = enc.encode(example(), EncodeStats())
    prompt, truncated = enc.prompt_ids(example(answer=None))
    assert not truncated
    assert record["input_ids"][: len(prompt)] == prompt
    assert record["labels"][len(prompt)] != IGNORE_INDEX and record["labels"][len(prompt) - 1] == IGNORE_INDEX

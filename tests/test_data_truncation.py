"""Over-long prompts on the real tokenizers: cut from the left, instruction and answer intact, budget filled exactly."""
from fastft.data.encode import Encoder, EncodeStats
from fastft.data.render import Renderer
from fastft.data.tasks import Example, Turn, get_task
from tests.tokenizers import family_tokenizer, labelled_spans  # noqa: F401  (fixture)

END_OF_TURN = {"qwen": "<|im_end|>", "llama3": "<|eot_id|>", "gemma3": "<end_of_turn>"}
SENTENCES = [f"{i}번째 문장은 지문을 길게 만들기 위해 덧붙인 설명입니다." for i in range(80)]
MAX_PROMPT, MAX_ANSWER = 120, 40


def middle(text: str, head: str, tail: str) -> str:
    """What lies between head and tail, without a leading replacement character (a Korean syllable's bytes
    may be split across tokens, and the cut can fall inside one)."""
    assert text.startswith(head) and text.endswith(tail)
    return text[len(head): len(text) - len(tail)].lstrip("\ufffd")


def test_long_qa_context_is_cut_from_the_left(family_tokenizer):
    family, tokenizer = family_tokenizer
    context = " ".join(SENTENCES)
    example = get_task("qa", {}).build({"id": "q", "context": context, "question": "마지막 문장은 몇 번째인가?", "answer": "79번째"}, 0, "다음 글을 읽고 질문에 답하세요.")
    encoder = Encoder(Renderer(tokenizer, "chat"), MAX_PROMPT, MAX_ANSWER)
    stats = EncodeStats()
    record = encoder.encode(example, stats)

    assert stats.prompt_truncated == 1
    assert labelled_spans(tokenizer, record) == ["79번째" + END_OF_TURN[family]]
    assert len(record["input_ids"]) == MAX_PROMPT + MAX_ANSWER  # the answer's unused budget goes to the prompt
    full_prompt = tokenizer.decode(encoder.prompt_ids(example, budget=10_000)[0])
    head, tail = full_prompt[: full_prompt.index(context)], full_prompt[full_prompt.index(context) + len(context):]
    assert "질문: 마지막 문장은 몇 번째인가?" in head
    prompt_ids = [t for t, label in zip(record["input_ids"], record["labels"]) if label == -100]
    kept = middle(tokenizer.decode(prompt_ids), head, tail)
    assert context.endswith(kept) and SENTENCES[-1] in kept and SENTENCES[0] not in kept


def test_long_chat_loses_its_oldest_turns_and_keeps_every_surviving_answer_trained(family_tokenizer):
    family, tokenizer = family_tokenizer
    end = END_OF_TURN[family]
    turns = [Turn("system", "짧게 답하세요.")]
    for i in range(30):
        turns += [Turn("user", f"{i}번 질문: 숫자 {i}에 1을 더하면?"), Turn("assistant", f"{i + 1}입니다.")]
    example = Example("c", None, "", "끝입니다.", history=tuple(turns + [Turn("user", "이제 끝인가요?")]))
    encoder = Encoder(Renderer(tokenizer, "chat"), MAX_PROMPT, MAX_ANSWER)
    stats = EncodeStats()
    record = encoder.encode(example, stats)

    assert stats.prompt_truncated == 1 and len(record["input_ids"]) == MAX_PROMPT + MAX_ANSWER
    text = tokenizer.decode(record["input_ids"])
    full = tokenizer.decode(encoder.prompt_ids(example, budget=10_000)[0])
    head = full[: full.index("0번 질문")]  # BOS, system turn, first user header: never cut
    assert text.startswith(head) and "짧게 답하세요." in head
    assert "0번 질문:" not in text.replace("10번 질문", "").replace("20번 질문", "")
    assert text.endswith("이제 끝인가요?" + full[full.index("이제 끝인가요?") + len("이제 끝인가요?"):] + "끝입니다." + end)
    spans = labelled_spans(tokenizer, record)
    assert spans[-1] == "끝입니다." + end
    surviving = [f"{i + 1}입니다.{end}" for i in range(30 - (len(spans) - 1), 30)]  # the newest earlier answers
    assert 2 <= len(surviving) < 30
    assert spans[1:-1] == surviving[1:]  # whole earlier answers stay trained ...
    assert surviving[0].endswith(spans[0].lstrip("\ufffd"))  # ... and the oldest one left may have lost its start

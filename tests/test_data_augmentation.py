"""Instruction augmentation: every training row rendered with each of 5 distinct phrasings; evaluation untouched."""
from collections import defaultdict

import pytest

from fastft.config.schema import DatasetSection
from fastft.data.pipeline import build_splits
from fastft.data.tasks import TASKS
from fastft.errors import FastftError
from tests.factories import REPO, tiny_bpe_tokenizer

SAMPLES = {
    "summary": ("data/ko_dialogsum_sample/train.csv", "data/ko_dialogsum_sample/dev.csv"),
    "qa": ("data/ko_qa_sample/train.jsonl", "data/ko_qa_sample/dev.jsonl"),
    "classification": ("data/solidity_swc_sample/train.jsonl", "data/solidity_swc_sample/dev.jsonl"),
}


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_bpe_tokenizer()


def prompts_by_row(tokenizer, split) -> dict[str, list[str]]:
    prompts = defaultdict(list)
    for record in split.dataset:
        prompt = [t for t, label in zip(record["input_ids"], record["labels"]) if label == -100]
        prompts[record["example_id"]].append(tokenizer.decode(prompt))
    return prompts


def used_instructions(prompt: str, instructions) -> list[str]:
    return [text for text in instructions if text in prompt]


@pytest.mark.parametrize("task", sorted(SAMPLES))
def test_augmentation_multiplies_train_by_five_with_distinct_instructions(tokenizer, task):
    train_file, eval_file = (str(REPO / path) for path in SAMPLES[task])
    instructions = TASKS[task].instructions
    assert len(set(instructions)) == 5
    plain, _ = build_splits(DatasetSection(task=task, train=train_file), tokenizer, None)
    cfg = DatasetSection(task=task, train=train_file, eval=eval_file, instruction_augmentation=True)
    train, evaluation = build_splits(cfg, tokenizer, None)

    assert train.stats.total == 5 * plain.stats.total and len(train.dataset) == 5 * len(plain.dataset)
    for row_prompts in prompts_by_row(tokenizer, train).values():
        assert len(row_prompts) == 5
        assert sorted(i for p in row_prompts for i in used_instructions(p, instructions)) == sorted(instructions)
    eval_prompts = prompts_by_row(tokenizer, evaluation)
    assert evaluation.stats.total == len(eval_prompts)  # one rendering per eval row ...
    assert all(used_instructions(p[0], instructions) == [instructions[0]] for p in eval_prompts.values())  # ... the default one


@pytest.mark.parametrize("task", ["instruction", "chat"])
def test_augmentation_refused_for_tasks_whose_prompt_comes_from_the_data(tokenizer, task):
    with pytest.raises(FastftError, match="instruction augmentation needs instruction phrasings"):
        build_splits(DatasetSection(task=task, train="x.jsonl", instruction_augmentation=True), tokenizer, None)

"""fastft generate and fastft chat on a tiny Llama with a random LoRA adapter: prompts, batching, files, errors."""
import csv

import pytest
import torch
from click.testing import CliRunner

from fastft.cli import main
from fastft.config.loader import load_recipe
from fastft.data.encode import IGNORE_INDEX
from fastft.data.pipeline import build_encoder, build_splits
from fastft.errors import FastftError
from fastft.evaluation.chat import open_conversation
from fastft.evaluation.generate import generate_texts, generation_prompts, length_batches, load_for_inference
from fastft.evaluation.predict import read_examples
from fastft.runtime.outputs import RECIPE_FILE, recipe_yaml
from tests.factories import SAMPLE_DEV, recipe_for

quiet = lambda *_: None  # noqa: E731
WHOLE_PROMPTS = ["dataset.max_prompt_tokens=1024"]  # no dialogue of the sample is cut, so prompt lengths differ
FIRST, SECOND = "안녕하세요, 우산을 두고 내렸어요.", "어제 저녁 2호선 막차였어요."


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_llama):
    """(recipe file, adapter folder) laid out as `fastft run` leaves them; the LoRA weights are random, not zero,
    so the adapter changes what the model generates."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from fastft.models.resolve import resolve_model

    folder = tmp_path_factory.mktemp("generate")
    recipe_file = recipe_for(folder, tiny_llama, "generation: {max_new_tokens: 6, batch_size: 3}\n")
    recipe = load_recipe(recipe_file)
    tokenizer = resolve_model(recipe, quiet).tokenizer
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter = folder / "outputs" / "tiny" / "final_model"
    model.save_pretrained(adapter)
    tokenizer.save_pretrained(adapter)
    (adapter.parent / RECIPE_FILE).write_text(recipe_yaml(recipe), encoding="utf-8")
    return recipe_file, adapter


def dev_rows(count: int) -> list[dict]:
    with SAMPLE_DEV.open(encoding="utf-8") as f:
        return list(csv.DictReader(f))[:count]


def write_csv(path, rows: list[dict], columns: list[str]):
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_csv(path) -> tuple[list[str], list[dict]]:
    with path.open(encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_generation_prompts_are_the_prompt_part_of_the_training_examples(run):
    recipe = load_recipe(run[0], WHOLE_PROMPTS)
    _, tokenizer = load_for_inference(recipe, run[1], quiet)
    train, _ = build_splits(recipe.dataset, tokenizer, None)
    assert train.stats.prompt_truncated == 0 and train.stats.kept == len(dev_rows(1000))
    rows = read_examples(recipe.dataset, str(SAMPLE_DEV), "dataset.eval", None, None)
    prompts = generation_prompts(build_encoder(recipe.dataset, tokenizer), rows)
    for prompt, record in zip(prompts, train.dataset, strict=True):
        answer_start = next(i for i, label in enumerate(record["labels"]) if label != IGNORE_INDEX)
        assert prompt == record["input_ids"][:answer_start]


def test_batched_left_padded_generation_equals_one_prompt_at_a_time(run):
    recipe = load_recipe(run[0], WHOLE_PROMPTS)
    model, tokenizer = load_for_inference(recipe, run[1], quiet)
    encoder = build_encoder(recipe.dataset, tokenizer)
    rows = read_examples(recipe.dataset, str(SAMPLE_DEV), "dataset.eval", None, 8)
    prompts = generation_prompts(encoder, rows)
    lengths = [len(p) for p in prompts]
    assert lengths != sorted(lengths, reverse=True)  # batching by length reorders these prompts
    batches = length_batches(prompts, recipe.generation.batch_size)
    assert len({lengths[i] for i in batches[0]}) == 3  # the first batch of 3 really is padded
    batched = generate_texts(model, tokenizer, encoder, rows, recipe.generation)
    # Texts left in batch order would differ from the input order's, so the per-prompt check below would fail.
    assert [batched[i] for batch in batches for i in batch] != batched
    stop = [tokenizer.convert_tokens_to_ids("<|eot_id|>"), tokenizer.eos_token_id]
    for prompt, text in zip(prompts, batched, strict=True):
        with torch.no_grad():
            out = model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=6, do_sample=False, eos_token_id=stop,
                                 pad_token_id=tokenizer.pad_token_id)
        assert text == tokenizer.decode(out[0, len(prompt):], skip_special_tokens=True).strip()


@pytest.mark.parametrize("lengths, size", [([3, 7, 5, 7, 1, 5], 4), ([2, 2, 2], 2), ([4], 8), ([1, 9, 3], 1)])
def test_length_batches_cover_every_prompt_once_longest_first(lengths, size):
    prompts = [[0] * n for n in lengths]
    batches = length_batches(prompts, size)
    order = [i for batch in batches for i in batch]
    assert sorted(order) == list(range(len(lengths)))
    assert all(len(batch) == size for batch in batches[:-1]) and 0 < len(batches[-1]) <= size
    for a, b in zip(order, order[1:]):  # longest first; equal lengths keep their input order
        assert lengths[a] > lengths[b] or (lengths[a] == lengths[b] and a < b)


def test_generate_writes_predictions_with_and_without_answers(run, tmp_path):
    recipe_file, adapter = run
    with_answers = CliRunner().invoke(main, ["generate", str(recipe_file), "--adapter", str(adapter), "--set", "dataset.max_eval_samples=3"])
    assert with_answers.exit_code == 0, with_answers.output
    header, scored = read_csv(adapter.parent / "predictions" / "dev.csv")
    assert header == ["id", "prediction", "reference"]
    assert [(r["id"], r["reference"]) for r in scored] == [(r["fname"], r["summary"]) for r in dev_rows(3)]

    test_set = write_csv(tmp_path / "test.csv", dev_rows(3), ["fname", "dialogue"])  # a competition test file: no summary
    out = tmp_path / "preds" / "test_preds.csv"
    blind = CliRunner().invoke(main, ["generate", str(recipe_file), "--adapter", str(adapter), "--input", str(test_set), "--output", str(out)])
    assert blind.exit_code == 0, blind.output
    assert f"3 predictions written to {out}" in blind.stdout
    header, predicted = read_csv(out)
    assert header == ["id", "prediction"]
    # The same dialogues give the same prompts, so the same greedy predictions, with or without their answers.
    assert predicted == [{"id": r["id"], "prediction": r["prediction"]} for r in scored]
    assert all(r["prediction"] for r in predicted)


def test_generate_zero_shot_writes_beside_the_run_folder(run):
    recipe_file, adapter = run
    result = CliRunner().invoke(main, ["generate", str(recipe_file), "--zero-shot", "--set", "dataset.max_eval_samples=2"])
    assert result.exit_code == 0, result.output
    _, rows = read_csv(adapter.parents[1] / "tiny-zero-shot" / "predictions" / "dev.csv")
    assert [r["id"] for r in rows] == ["dev_0", "dev_1"]


def test_chat_format_examples_predict_the_reply_to_a_trailing_user_turn(run, tmp_path):
    recipe = load_recipe(run[0], ["dataset.task=chat"])
    messages = '[{"role": "user", "content": "하나"}, {"role": "assistant", "content": "둘"}, {"role": "user", "content": "셋"}]'
    path = tmp_path / "chats.jsonl"
    path.write_text(f'{{"id": "open", "messages": {messages}}}\n', encoding="utf-8")
    (example,) = read_examples(recipe.dataset, str(path), "--input", None, None)
    assert example.answer is None and [t.content for t in example.history] == ["하나", "둘", "셋"]


def test_training_still_rejects_a_file_without_answers(run, tmp_path):
    from fastft.models.resolve import resolve_model

    recipe = load_recipe(run[0])
    no_answers = write_csv(tmp_path / "train.csv", dev_rows(2), ["fname", "dialogue"])
    with pytest.raises(FastftError, match=f"dataset.train: {no_answers} lacks column\\(s\\) 'summary'"):
        build_splits(recipe.dataset.model_copy(update={"train": str(no_answers), "eval": None}), resolve_model(recipe, quiet).tokenizer, None)


def test_chat_keeps_the_history_through_the_training_template(run):
    recipe = load_recipe(run[0])
    conversation = open_conversation(recipe, run[1], quiet)
    first = conversation.say(FIRST)
    prompt = generation_prompts(conversation.encoder, [conversation.prompt_for(SECOND)])[0]
    turns = [{"role": "user", "content": FIRST}, {"role": "assistant", "content": first}, {"role": "user", "content": SECOND}]
    tokenizer = conversation.tokenizer
    rendered = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    assert prompt == tokenizer(rendered, add_special_tokens=False)["input_ids"]
    conversation.reset()
    assert generation_prompts(conversation.encoder, [conversation.prompt_for(SECOND)])[0] != prompt


def test_chat_over_stdin_answers_each_turn_and_resets(run):
    recipe_file, adapter = run
    conversation = open_conversation(load_recipe(recipe_file), adapter, quiet)
    expected = [conversation.say(FIRST), conversation.say(SECOND)]
    result = CliRunner().invoke(main, ["chat", "--adapter", str(adapter)], input=f"{FIRST}\n{SECOND}\n/reset\n{FIRST}\n/exit\n{SECOND}\n")
    assert result.exit_code == 0, result.output
    # After /reset the first turn gets the same greedy reply as at the start; nothing is answered after /exit.
    assert result.stdout == "".join(f"{reply}\n" for reply in [*expected, expected[0]])
    assert "history cleared" in result.stderr


@pytest.mark.parametrize("arguments, message", [
    ([], "pass exactly one of --adapter DIR and --zero-shot"),
    (["--zero-shot", "--adapter", "{adapter}"], "pass exactly one of --adapter DIR and --zero-shot"),
    (["--zero-shot", "--input", "{tmp}/missing.csv"], "--input: file not found: {tmp}/missing.csv"),
    (["--zero-shot", "--input", "{tmp}/latin1.csv"], "--input: {tmp}/latin1.csv is not UTF-8 text"),
    (["--zero-shot", "--input", "{tmp}/summaries.csv"], "--input: {tmp}/summaries.csv lacks column(s) 'dialogue'"),
    (["--adapter", "{tmp}"], "no adapter_config.json: this is not a LoRA adapter folder"),
])
def test_generate_errors(run, tmp_path, arguments, message):
    (tmp_path / "latin1.csv").write_bytes("fname,dialogue\nx,caf\xe9\n".encode("latin-1"))
    write_csv(tmp_path / "summaries.csv", dev_rows(1), ["fname", "summary"])
    fill = {"adapter": run[1], "tmp": tmp_path}
    result = CliRunner().invoke(main, ["generate", str(run[0]), *[a.format(**fill) for a in arguments]])
    assert result.exit_code == 2 and message.format(**fill) in result.output, result.output


def test_chat_errors(run, tmp_path):
    not_adapter = CliRunner().invoke(main, ["chat", "--adapter", str(tmp_path)], input="")
    assert not_adapter.exit_code == 2 and "no adapter_config.json: this is not a LoRA adapter folder" in not_adapter.output
    lone = tmp_path / "copied" / "final_model"
    lone.mkdir(parents=True)
    (lone / "adapter_config.json").write_text((run[1] / "adapter_config.json").read_text())
    no_recipe = CliRunner().invoke(main, ["chat", "--adapter", str(lone)], input="")
    assert no_recipe.exit_code == 2, no_recipe.output
    assert f"{lone.parent / RECIPE_FILE}: no recipe given, and no {RECIPE_FILE} beside the adapter" in no_recipe.output

"""fastft eval: generation with the training template on a tiny Llama, predictions and metrics written."""
import csv
import json

from click.testing import CliRunner

from fastft.cli import main
from fastft.data.encode import IGNORE_INDEX, EncodeStats
from tests.factories import recipe_for


def test_eval_zero_shot_and_with_adapter(tmp_path, tiny_llama):
    recipe = str(recipe_for(tmp_path, tiny_llama))
    small = ["--set", "dataset.max_eval_samples=3", "--set", "generation.max_new_tokens=6", "--set", "generation.batch_size=2"]
    zero = CliRunner().invoke(main, ["eval", recipe, "--zero-shot", *small])
    assert zero.exit_code == 0, zero.output
    out = tmp_path / "outputs" / "tiny-zero-shot"
    rows = list(csv.DictReader((out / "predictions.csv").open(encoding="utf-8")))
    assert [r["id"] for r in rows] == ["dev_0", "dev_1", "dev_2"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"rouge1", "rouge2", "rougeL", "rouge_sum", "rouge_sum_morpheme"} <= set(metrics)
    assert metrics["rouge_sum"] == metrics["rouge1"] + metrics["rouge2"] + metrics["rougeL"]

    trained = CliRunner().invoke(main, ["run", recipe, "--set", "dataset.max_train_samples=4", "--set", "dataset.max_eval_samples=2", "--set", "training.epochs=1"])
    assert trained.exit_code == 0, trained.output
    adapter = tmp_path / "outputs" / "tiny" / "final_model"
    tuned = CliRunner().invoke(main, ["eval", recipe, "--adapter", str(adapter), *small])
    assert tuned.exit_code == 0, tuned.output
    assert json.loads((adapter.parent / "eval" / "metrics.json").read_text())["adapter"] == str(adapter)


def test_generation_prompt_is_the_training_prompt_on_the_real_model_tokenizer(tmp_path, tiny_llama):
    """The ids generation feeds the model are exactly the masked prefix of the training example."""
    from fastft.config.loader import load_recipe
    from fastft.data.pipeline import build_encoder, build_task, examples, open_split
    from fastft.models.resolve import resolve_model

    recipe = load_recipe(recipe_for(tmp_path, tiny_llama))
    tokenizer = resolve_model(recipe, lambda *_: None).tokenizer
    encoder = build_encoder(recipe.dataset, tokenizer)
    task = build_task(recipe.dataset)
    example = next(examples(task, open_split(task, recipe.dataset.eval, "dataset.eval", None, 1), False))
    prompt, _ = encoder.prompt_ids(example)
    record = encoder.encode(example, EncodeStats())
    assert record["input_ids"][: len(prompt)] == prompt
    assert set(record["labels"][: len(prompt)]) == {IGNORE_INDEX} and record["labels"][len(prompt)] != IGNORE_INDEX


def test_eval_needs_exactly_one_of_adapter_and_zero_shot(tmp_path, tiny_llama):
    result = CliRunner().invoke(main, ["eval", str(recipe_for(tmp_path, tiny_llama))])
    assert result.exit_code == 2 and "pass exactly one of --adapter DIR and --zero-shot" in result.output


def test_eval_rejects_a_folder_that_is_not_an_adapter(tmp_path, tiny_llama):
    result = CliRunner().invoke(main, ["eval", str(recipe_for(tmp_path, tiny_llama)), "--adapter", str(tmp_path)])
    assert result.exit_code == 2 and "this is not a LoRA adapter folder" in result.output

"""Recipe inheritance, overrides and validation messages."""
from pathlib import Path

import pytest

from fastft.config.loader import RecipeError, deep_merge, load_recipe
from fastft.errors import FastftError

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p for p in (REPO / "recipes").rglob("*.yaml") if not {"base", "distributed"} & set(p.relative_to(REPO / "recipes").parts))


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


MINIMAL = "experiment: t\nmodel: {name: m}\ndataset: {train: x.csv}\n"


@pytest.mark.parametrize("recipe", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_recipe_validates(recipe):
    loaded = load_recipe(recipe)
    assert loaded.experiment == recipe.stem


def test_base_is_deep_merged_and_lists_replaced(tmp_path):
    write(tmp_path, "base/b.yaml", "lora: {r: 8, alpha: 16, target_modules: [q_proj, v_proj, o_proj]}\ntraining: {epochs: 2}\n")
    top = write(tmp_path, "top.yaml", "_base_: base/b.yaml\n" + MINIMAL + "lora: {r: 4, target_modules: [k_proj]}\n")
    recipe = load_recipe(top)
    assert recipe.lora.r == 4 and recipe.lora.alpha == 16  # merged key by key
    assert recipe.lora.target_modules == ["k_proj"]  # lists replace, never concatenate
    assert recipe.training.epochs == 2


def test_two_level_inheritance_later_layers_win(tmp_path):
    write(tmp_path, "a.yaml", "seed: 1\ntraining: {epochs: 5, batch_size: 3}\n")
    write(tmp_path, "b.yaml", "_base_: a.yaml\nseed: 2\ntraining: {epochs: 4}\n")
    top = write(tmp_path, "c.yaml", "_base_: b.yaml\n" + MINIMAL)
    recipe = load_recipe(top)
    assert (recipe.seed, recipe.training.epochs, recipe.training.batch_size) == (2, 4, 3)


def test_inheritance_cycle_is_reported(tmp_path):
    write(tmp_path, "a.yaml", "_base_: b.yaml\n" + MINIMAL)
    write(tmp_path, "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(FastftError, match="cycle") as info:
        load_recipe(tmp_path / "a.yaml")
    assert "a.yaml -> " in info.value.hint and "b.yaml" in info.value.hint


def test_overrides_are_typed_by_the_schema(tmp_path):
    top = write(tmp_path, "r.yaml", MINIMAL)
    recipe = load_recipe(top, ["training.learning_rate=1e-4", "lora.r=32", "lora.target_modules=[q_proj]", "model.quantization=nf4"])
    assert recipe.training.learning_rate == pytest.approx(1e-4) and isinstance(recipe.training.learning_rate, float)
    assert recipe.lora.r == 32 and recipe.lora.target_modules == ["q_proj"] and recipe.model.quantization == "nf4"


def test_scientific_notation_in_yaml_is_a_float(tmp_path):
    # PyYAML reads `2e-5` (no dot) as a string; the schema must still type it.
    top = write(tmp_path, "r.yaml", MINIMAL + "training: {learning_rate: 2e-5}\n")
    assert load_recipe(top).training.learning_rate == pytest.approx(2e-5)


def test_all_errors_reported_at_once_with_file_and_suggestion(tmp_path):
    write(tmp_path, "base.yaml", "training: {lerning_rate: 0.1}\n")
    top = write(tmp_path, "r.yaml", "_base_: base.yaml\nexperiment: t\nmodel: {name: m, quantisation: nf4}\ndataset: {train: x.csv}\nlora: {r: -1}\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(top, ["training.batch_size=many"])
    text = str(info.value)
    assert "4 problem(s)" in text
    assert f"{(tmp_path / 'base.yaml').resolve()}: training.lerning_rate: unknown key; did you mean 'training.learning_rate'?" in text
    assert f"{top.resolve()}: model.quantisation: unknown key; did you mean 'model.quantization'?" in text
    assert f"{top.resolve()}: lora.r: Input should be greater than 0" in text
    assert "--set: training.batch_size: Input should be a valid integer" in text


def test_missing_required_keys(tmp_path):
    top = write(tmp_path, "r.yaml", "experiment: t\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(top)
    assert "model: required key is missing" in str(info.value)
    assert "dataset: required key is missing" in str(info.value)


def test_unknown_key_without_close_match_lists_allowed_keys(tmp_path):
    top = write(tmp_path, "r.yaml", MINIMAL + "output: {zzz: 1}\n")
    with pytest.raises(RecipeError, match=r"output.zzz: unknown key; allowed here: dir, logs_dir"):
        load_recipe(top)


@pytest.mark.parametrize(
    "text, message",
    [
        ("experiment: [unclosed\n", r"invalid YAML: .*"),
        ("", "the recipe is empty"),
        ("- a\n- b\n", "must be a YAML mapping"),
        ("_base_: 3\n" + MINIMAL, "`_base_` must be a file path"),
    ],
)
def test_malformed_recipe_files(tmp_path, text, message):
    top = write(tmp_path, "r.yaml", text)
    with pytest.raises(FastftError, match=message):
        load_recipe(top)


def test_yaml_error_names_line(tmp_path):
    top = write(tmp_path, "r.yaml", "experiment: t\nmodel: {name: m\n")
    with pytest.raises(FastftError) as info:
        load_recipe(top)
    assert info.value.where.startswith(f"{top.resolve()}:")


def test_missing_file_and_missing_base(tmp_path):
    with pytest.raises(FastftError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")
    top = write(tmp_path, "r.yaml", "_base_: gone.yaml\n" + MINIMAL)
    with pytest.raises(FastftError, match="`_base_` file not found: .*gone.yaml") as info:
        load_recipe(top)
    assert info.value.where == str(top.resolve())  # the file that names the missing base


@pytest.mark.parametrize("item", ["novalue", "=3", "training..epochs=1"])
def test_bad_override_syntax(tmp_path, item):
    top = write(tmp_path, "r.yaml", MINIMAL)
    with pytest.raises(FastftError, match="bad override"):
        load_recipe(top, [item])


def test_override_into_a_value_is_refused(tmp_path):
    top = write(tmp_path, "r.yaml", MINIMAL)
    with pytest.raises(FastftError, match="'experiment' is a value, not a section"):
        load_recipe(top, ["experiment.name=x"])


def test_deep_merge_does_not_mutate_inputs():
    base = {"a": {"b": 1, "c": [1, 2]}}
    top = {"a": {"c": [3]}}
    merged = deep_merge(base, top)
    assert merged == {"a": {"b": 1, "c": [3]}}
    assert base == {"a": {"b": 1, "c": [1, 2]}}


def test_old_key_spellings_still_work_with_one_line_each(tmp_path, capsys):
    recipe = write(tmp_path, "old.yaml", "experiment: t\nmodel: {name: m}\n"
                   "dataset: {train: x.csv, eval: x.csv, format_type: instruction}\nevaluation: {generate_every_epoch: true}\n")
    loaded = load_recipe(recipe)
    assert (loaded.dataset.layout, loaded.evaluation.generate_at_eval) == ("instruction", True)
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"fastft: {recipe}: recipe key dataset.format_type is now called dataset.layout; the old name still works for now",
                     f"fastft: {recipe}: recipe key evaluation.generate_every_epoch is now called evaluation.generate_at_eval; "
                     "the old name still works for now"]

    assert load_recipe(write(tmp_path, "new.yaml", MINIMAL), ["dataset.format_type=instruction"]).dataset.layout == "instruction"
    assert capsys.readouterr().err.count("\n") == 1


def test_old_and_new_spelling_together_are_refused(tmp_path):
    recipe = write(tmp_path, "both.yaml", MINIMAL.replace("train: x.csv", "train: x.csv, layout: chat, format_type: chat"))
    with pytest.raises(FastftError, match="dataset.format_type and dataset.layout are one setting, given twice"):
        load_recipe(recipe)

"""Hostile inputs (tests/hostile/cases.yaml) through the CLI: exit code 2, one `fastft error` line, no traceback,
nothing written. Most run in-process through click's CliRunner; a few run as real processes."""
import json
import re
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from fastft.cli import main
from fastft.config.loader import load_recipe, read_layers
from fastft.config.schema import Recipe
from fastft.errors import FastftError
from tests.factories import REPO, recipe_for

HOSTILE = Path(__file__).parent / "hostile"
CASES = yaml.safe_load((HOSTILE / "cases.yaml").read_text(encoding="utf-8"))
KOREAN_LINE = "#Person1#: 안녕하세요. 오늘 회의는 몇 시에 시작하나요? "  # no comma: one CSV field however often repeated


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _huge_line_recipe(tmp: Path) -> Path:
    return _write(tmp / "huge.yaml", f"experiment: 'not a name {'x' * 2_000_000}'\n")


def _deeply_nested_recipe(tmp: Path) -> Path:
    return _write(tmp / "deep.yaml", f"experiment: {'[' * 20_000}{']' * 20_000}\n")


def _base_symlink_outside(tmp: Path) -> Path:
    """A base inside the project's recipes/ that is a link to a file outside it."""
    outside = _write(tmp / "outside.yaml", "seed: 1\n")
    recipes = tmp / "project" / "recipes"
    recipes.mkdir(parents=True)
    (recipes / "linked.yaml").symlink_to(outside)
    return _write(recipes / "r.yaml", "_base_: linked.yaml\nexperiment: linked\n")


def _data_folder(tmp: Path) -> Path:
    folder = tmp / "train_folder"
    folder.mkdir()
    _write(folder / "notes.txt", "not a dataset\n")
    return folder


def _huge_line_jsonl(tmp: Path) -> Path:
    return _write(tmp / "huge.jsonl", '{"dialogue": "' + "x" * 3_000_000 + "\n")


def _deeply_nested_json(tmp: Path) -> Path:
    return _write(tmp / "deep.json", "[" * 100_000 + "]" * 100_000)


def _deeply_nested_jsonl(tmp: Path) -> Path:
    return _write(tmp / "deep.jsonl", '{"dialogue": ' + "[" * 100_000 + "]" * 100_000 + "}\n")


def _huge_field_missing_column(tmp: Path) -> Path:
    return _write(tmp / "huge.csv", f"fname,dialogue\nd1,{KOREAN_LINE * 6000}\n")


def _huge_field(tmp: Path) -> Path:
    """One dialogue longer than Python's csv field limit (131,072 characters): valid data, truncated by the encoder."""
    return _write(tmp / "long_dialogue.csv", f"fname,dialogue,summary\nd1,{KOREAN_LINE * 6000},회의 시간을 묻는다.\n")


MAKERS = {maker.__name__.lstrip("_"): maker for maker in (
    _huge_line_recipe, _deeply_nested_recipe, _base_symlink_outside, _data_folder, _huge_line_jsonl,
    _huge_field_missing_column, _huge_field, _deeply_nested_json, _deeply_nested_jsonl)}


def case_path(case: dict, tmp: Path) -> Path:
    return MAKERS[case["make"]](tmp) if "make" in case else HOSTILE / case["file"]


def case_id(case: dict) -> str:
    name = case.get("file") or case["make"]
    return "+".join([name, *case.get("set", ()), *([case["split"]] if "split" in case else [])])


def data_args(case: dict, tmp: Path, model_dir: Path) -> list[str]:
    """The tiny model's recipe without an eval split, then the split the case names pointing at the case's file."""
    args = [str(recipe_for(tmp, model_dir)), "--set", "dataset.eval=null",
            "--set", f"dataset.{case.get('split', 'train')}={case_path(case, tmp)}"]
    for item in case.get("set", ()):
        args += ["--set", item]
    return args


def recipe_args(case: dict, tmp: Path) -> list[str]:
    args = [str(case_path(case, tmp))]
    for item in case.get("set", ()):
        args += ["--set", item]
    return args


def assert_one_clean_error(exit_code: int, stderr: str, expect: str) -> None:
    """Exit 2; one `fastft error` line, followed only by its indented details; no traceback; short."""
    assert exit_code == 2, stderr
    assert "Traceback" not in stderr
    # A progress bar ends with a carriage return that puts the terminal back at the start of its (cleared) line.
    lines = [line for line in re.split(r"[\r\n]", stderr) if line.strip()]
    first = next(i for i, line in enumerate(lines) if line.startswith("fastft error"))
    assert all(line.startswith("  ") for line in lines[first + 1:]), stderr
    assert expect in stderr, stderr
    assert len(stderr) < 4000, f"{len(stderr)} characters of error output"


def assert_nothing_written(tmp: Path) -> None:
    assert not (tmp / "outputs").exists() and not (tmp / "logs").exists()


@pytest.mark.parametrize("case", CASES["recipes"], ids=case_id)
def test_broken_recipe(case, tmp_path):
    result = CliRunner().invoke(main, ["validate", *recipe_args(case, tmp_path)])
    assert_one_clean_error(result.exit_code, result.stderr, case["expect"])
    assert result.stdout == ""


@pytest.mark.parametrize("case", CASES["data"], ids=case_id)
def test_broken_data(case, tmp_path, tiny_llama):
    result = CliRunner().invoke(main, ["run", *data_args(case, tmp_path, tiny_llama)])
    assert_one_clean_error(result.exit_code, result.stderr, case["expect"])
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("case", CASES["accepted"]["recipes"], ids=case_id)
def test_odd_but_valid_recipe(case, tmp_path):
    result = CliRunner().invoke(main, ["validate", *recipe_args(case, tmp_path)])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("case", CASES["accepted"]["data"], ids=case_id)
def test_odd_but_valid_data(case, tmp_path, tiny_llama):
    result = CliRunner().invoke(main, ["preview", "-n", "1", *data_args(case, tmp_path, tiny_llama)])
    assert result.exit_code == 0, result.output
    assert "whole data set" in result.stdout


def _cli(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastft", *args], cwd=tmp, capture_output=True, text=True, timeout=300)


def _case(section: str, name: str) -> dict:
    return next(case for case in CASES[section] if case.get("file", case.get("make")) == name)


def test_python_tag_in_a_real_process_runs_nothing(tmp_path):
    case = _case("recipes", "recipes/yaml_python_apply.yaml")
    done = _cli(tmp_path, "validate", str(HOSTILE / case["file"]))
    assert_one_clean_error(done.returncode, done.stderr, case["expect"])
    assert not (tmp_path / "hostile_pwned").exists()


@pytest.mark.parametrize("command, name", [("run", "data/binary_junk.csv"), ("preview", "data/json_object.json")])
def test_broken_data_in_a_real_process(command, name, tmp_path, tiny_llama):
    case = _case("data", name)
    done = _cli(tmp_path, command, *data_args(case, tmp_path, tiny_llama))
    assert_one_clean_error(done.returncode, done.stderr, case["expect"])
    assert_nothing_written(tmp_path)


MINIMAL = "experiment: t\nmodel: {name: m}\ndataset: {train: x.csv}\n"


def test_base_may_climb_or_be_absolute_inside_the_project(tmp_path):
    project = tmp_path / "project"
    (project / "shared").mkdir(parents=True)
    (project / "recipes" / "team").mkdir(parents=True)
    common = _write(project / "shared" / "common.yaml", "seed: 7\n")
    climbing = _write(project / "recipes" / "team" / "climb.yaml", "_base_: ../../shared/common.yaml\n" + MINIMAL)
    absolute = _write(project / "recipes" / "team" / "absolute.yaml", f"_base_: {common}\n" + MINIMAL)
    assert load_recipe(climbing).seed == load_recipe(absolute).seed == 7


def test_shipped_base_is_allowed_from_any_folder(tmp_path):
    _, sources = read_layers(recipe_for(tmp_path, tmp_path / "model"))
    assert sources["lora.r"] == str(REPO / "recipes" / "base" / "causal_lm.yaml")


def test_a_recipe_outside_any_project_may_not_reach_a_sibling_folder(tmp_path):
    _write(tmp_path / "b.yaml", "seed: 1\n")
    (tmp_path / "mine").mkdir()
    recipe = _write(tmp_path / "mine" / "r.yaml", "_base_: ../b.yaml\n" + MINIMAL)
    with pytest.raises(FastftError, match=r"`_base_` \.\./b\.yaml is outside the recipe's project") as info:
        load_recipe(recipe)
    assert str(tmp_path / "mine") in info.value.hint


# Values of every kind YAML can hold, odd text included (markup, line breaks, right-to-left and control characters).
_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30),
                     st.sampled_from(["[/bold]", "a\nfastft error b", "\u202e", "\x85", "auto", "nf4", "-1", "1e-4", ""]))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                       max_leaves=8)
_sections = {name: list(field.annotation.model_fields) if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
             else [] for name, field in Recipe.model_fields.items()}
_keys = st.sampled_from(sorted(_sections)) | st.text(max_size=12)


@st.composite
def mutated_recipes(draw) -> tuple[dict, list[str]]:
    """A valid recipe with a few keys (known or random, at the top or in a section) set to random values, and random --sets."""
    recipe = {"experiment": "prop", "model": {"name": "m"}, "dataset": {"train": "x.csv"}}
    for _ in range(draw(st.integers(0, 3))):
        section = draw(_keys)
        fields = _sections.get(section, [])
        if fields and draw(st.booleans()):
            key = draw(st.sampled_from(fields) | st.text(max_size=12))
            recipe[section] = {**(recipe.get(section) if isinstance(recipe.get(section), dict) else {}), key: draw(_values)}
        else:
            recipe[section] = draw(_values)
    known = st.sampled_from([f"{section}.{key}" for section, keys in _sections.items() for key in keys])
    sets = draw(st.lists(st.builds("{}={}".format, known | st.text(max_size=20), _scalars.map(str)), max_size=2))
    return recipe, sets


@settings(max_examples=150, deadline=timedelta(seconds=5), suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutated_recipes())
def test_validate_never_crashes_on_mutated_recipes(tmp_path, case):
    recipe, sets = case
    path = tmp_path / "mutated.yaml"
    path.write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")
    result = CliRunner().invoke(main, ["validate", str(path), *(arg for item in sets for arg in ("--set", item))])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    if result.exit_code == 0:
        assert result.stdout.startswith(f"{path}: ok") and result.stderr == ""
    else:
        assert_one_clean_error(result.exit_code, result.stderr, "")


def _pickle_only_copy(model_dir: Path, folder: Path) -> Path:
    """The checkpoint with its weights as pytorch_model.bin (a pickle) and no safetensors."""
    import torch
    from safetensors.torch import load_file

    shutil.copytree(model_dir, folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    return folder


def test_pickle_only_checkpoint_is_refused_before_anything_is_written(tmp_path, tiny_llama):
    from transformers import AutoModelForCausalLM

    from fastft.models.loader import load_base_model

    model_dir = _pickle_only_copy(tiny_llama, tmp_path / "pickled")
    assert AutoModelForCausalLM.from_pretrained(model_dir) is not None  # transformers itself would unpickle it
    result = CliRunner().invoke(main, ["run", str(recipe_for(tmp_path, model_dir))])
    assert_one_clean_error(result.exit_code, result.stderr, "has only PyTorch pickle weights (*.bin)")
    assert "save_pretrained(folder), which writes model.safetensors" in result.stderr
    assert_nothing_written(tmp_path)
    with pytest.raises(FastftError, match="no file named model.safetensors"):
        load_base_model(load_recipe(recipe_for(tmp_path, model_dir)).model, None, str(model_dir))


def _checkpoint_with_code(model_dir: Path, folder: Path, marker: Path) -> Path:
    """The checkpoint as a custom architecture whose configuration module, when imported, writes `marker`."""
    shutil.copytree(model_dir, folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config.update(model_type="marker", auto_map={"AutoConfig": "configuration_marker.MarkerConfig",
                                                 "AutoModelForCausalLM": "modeling_marker.MarkerForCausalLM"})
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    _write(folder / "configuration_marker.py", f"from pathlib import Path\nfrom transformers import LlamaConfig\n\n"
                                               f"Path({str(marker)!r}).write_text('ran')\n\n\n"
                                               "class MarkerConfig(LlamaConfig):\n    model_type = 'marker'\n")
    _write(folder / "modeling_marker.py", "from transformers import LlamaForCausalLM\n\nfrom .configuration_marker import MarkerConfig\n\n\n"
                                          "class MarkerForCausalLM(LlamaForCausalLM):\n    config_class = MarkerConfig\n")
    return folder


def test_checkpoint_code_runs_only_when_the_recipe_trusts_it(tmp_path, tiny_llama):
    marker = tmp_path / "code_ran"
    model_dir = _checkpoint_with_code(tiny_llama, tmp_path / "custom", marker)
    recipe = str(recipe_for(tmp_path, model_dir))

    refused = CliRunner().invoke(main, ["run", recipe])
    assert_one_clean_error(refused.exit_code, refused.stderr, f"model '{model_dir}' needs its own Python code to load")
    assert "set model.trust_remote_code: true" in refused.stderr
    assert not marker.exists()
    assert_nothing_written(tmp_path)

    trusted = CliRunner().invoke(main, ["preview", recipe, "-n", "0", "--set", "model.trust_remote_code=true"])
    assert trusted.exit_code == 0, trusted.output
    shown = " ".join(trusted.output.split())  # rich wraps long lines
    assert f"warning: model.trust_remote_code is true: Python code shipped with {model_dir} runs on this machine" in shown
    assert marker.read_text() == "ran"


@pytest.mark.parametrize("files, expect", [
    ({"adapter_config.json": "{}", "adapter_model.bin": ""}, "the adapter has only PyTorch pickle weights (adapter_model.bin)"),
    ({"adapter_config.json": '{"r": 8,'}, "adapter_config.json is not valid UTF-8 JSON"),
    ({"adapter_config.json": "[1, 2]"}, "adapter_config.json does not hold a JSON object"),
], ids=["pickle", "truncated", "list"])
def test_broken_adapter_folder(tmp_path, files, expect):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    for name, text in files.items():
        _write(adapter / name, text)
    result = CliRunner().invoke(main, ["merge", "--adapter", str(adapter), "--out", str(tmp_path / "merged")])
    assert_one_clean_error(result.exit_code, result.stderr, expect)
    assert not (tmp_path / "merged").exists()

"""Hostile inputs (tests/hostile/cases.yaml) through the CLI: exit code 2, one `fastft error` line, no traceback,
nothing written. Most run in-process through click's CliRunner; a few run as real processes."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from fastft.cli import main
from tests.factories import recipe_for

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


def _huge_field_missing_column(tmp: Path) -> Path:
    return _write(tmp / "huge.csv", f"fname,dialogue\nd1,{KOREAN_LINE * 6000}\n")


def _huge_field(tmp: Path) -> Path:
    """One dialogue longer than Python's csv field limit (131,072 characters): valid data, truncated by the encoder."""
    return _write(tmp / "long_dialogue.csv", f"fname,dialogue,summary\nd1,{KOREAN_LINE * 6000},회의 시간을 묻는다.\n")


MAKERS = {maker.__name__.lstrip("_"): maker for maker in (
    _huge_line_recipe, _deeply_nested_recipe, _base_symlink_outside, _data_folder, _huge_line_jsonl,
    _huge_field_missing_column, _huge_field)}


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

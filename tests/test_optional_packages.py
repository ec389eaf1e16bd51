"""A recipe that needs an optional package that is not installed is refused before any work: one message naming the
recipe key and the install command, exit code 2, nothing written, no model loaded.

A package is hidden by setting sys.modules[name] = None: importlib.util.find_spec then answers None and `import name`
raises ImportError, as on a machine without it. The recipes name a model folder that does not exist, so a command
that loaded anything before checking would fail with "cannot load model" instead of the expected message.
"""
import sys

import pytest
from click.testing import CliRunner

from fastft.cli import main
from fastft.config.optional import NEEDS, installed
from tests.factories import recipe_for

KO = 'pip install -e ".[ko]"'
TB = 'pip install -e ".[tensorboard]"'
MISSING = [  # (--set items, hidden module, the message)
    (["evaluation.generate_at_eval=true"], "kiwipiepy",
     "evaluation.generate_at_eval: scoring generations on Korean morphemes needs kiwipiepy, which is not installed\n"
     f"  fix: {KO}, or set evaluation.generate_at_eval: false"),
    (["model.quantization=nf4"], "bitsandbytes",
     "model.quantization: loading the base in 4 bits (QLoRA) needs bitsandbytes, which is not installed\n"
     '  fix: pip install "bitsandbytes>=0.45", or set model.quantization: none'),
    (["logging.tensorboard=true"], "tensorboard",
     "logging.tensorboard: TensorBoard logging needs tensorboard, which is not installed\n"
     f"  fix: {TB}, or set logging.tensorboard: false"),
    (["logging.report_to=[tensorboard]"], "tensorboard",
     "logging.report_to: reporting to tensorboard needs tensorboard, which is not installed\n"
     f"  fix: {TB}, or drop tensorboard from logging.report_to"),
    (["logging.report_to=[wandb]"], "wandb",
     "logging.report_to: reporting to wandb needs wandb, which is not installed\n"
     "  fix: pip install -e \".[wandb]\", or drop wandb from logging.report_to"),
    (["logging.report_to=[mlflow]"], "mlflow",
     "logging.report_to: reporting to mlflow needs mlflow, which is not installed\n"
     "  fix: pip install -e \".[mlflow]\", or drop mlflow from logging.report_to"),
    (["model.attn_implementation=flash_attention_2"], "flash_attn",
     "model.attn_implementation: flash_attention_2 needs flash-attn, which is not installed\n"
     '  fix: pip install -e ".[gpu]", or set model.attn_implementation: auto'),
    (["model.backend=unsloth"], "unsloth",
     "model.backend: the unsloth backend needs unsloth, which is not installed\n"
     '  fix: pip install -e ".[unsloth]", or set model.backend: hf'),
]


def sets(items):
    return [arg for item in items for arg in ("--set", item)]


@pytest.fixture
def recipe(tmp_path):
    return str(recipe_for(tmp_path, tmp_path / "no-such-model"))


def hide(monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)
    assert not installed(module)


def refused(result, message, tmp_path):
    assert result.exit_code == 2, result.output
    assert f"fastft error {message}\n" in result.output
    assert "Traceback" not in result.output and "cannot load model" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml"]  # no outputs/, no logs/


@pytest.mark.parametrize("items, module, message", MISSING, ids=[f"{m}-{i[0]}" for i, m, _ in MISSING])
def test_run_names_the_missing_package_before_any_work(tmp_path, recipe, monkeypatch, items, module, message):
    hide(monkeypatch, module)
    command = "validate" if module == "unsloth" else "run"  # on a machine without a GPU, run refuses unsloth for that first
    refused(CliRunner().invoke(main, [command, recipe, *sets(items)]), message, tmp_path)


@pytest.mark.parametrize("items, module, message", MISSING[:2], ids=["kiwipiepy", "bitsandbytes"])
def test_validate_says_the_same(tmp_path, recipe, monkeypatch, items, module, message):
    hide(monkeypatch, module)
    refused(CliRunner().invoke(main, ["validate", recipe, *sets(items)]), message, tmp_path)


def test_eval_scores_korean_morphemes_so_it_needs_kiwi(tmp_path, recipe, monkeypatch):
    hide(monkeypatch, "kiwipiepy")
    refused(CliRunner().invoke(main, ["eval", recipe, "--zero-shot"]), (
        "dataset.task: scoring generations on Korean morphemes needs kiwipiepy, which is not installed\n"
        f"  fix: {KO}, or use `fastft generate` to predict without scores"), tmp_path)


def test_generate_scores_nothing_but_loads_the_base_as_the_recipe_says(tmp_path, recipe, monkeypatch):
    hide(monkeypatch, "bitsandbytes")
    refused(CliRunner().invoke(main, ["generate", recipe, "--zero-shot", *sets(["model.quantization=nf4"])]),
            MISSING[1][2], tmp_path)


def test_generate_does_not_ask_for_the_scoring_package(tmp_path, recipe, monkeypatch):
    hide(monkeypatch, "kiwipiepy")
    result = CliRunner().invoke(main, ["generate", recipe, "--zero-shot"])
    assert result.exit_code == 2 and "cannot load model" in result.output  # it got past the check to the model


def test_sweep_checks_every_cell_before_the_first_trains(tmp_path, recipe, monkeypatch):
    hide(monkeypatch, "bitsandbytes")
    result = CliRunner().invoke(main, ["sweep", recipe, "--grid", "model.quantization=none,nf4"])
    refused(result, "model.quantization: grid cell model.quantization=nf4: loading the base in 4 bits (QLoRA) needs "
                    "bitsandbytes, which is not installed", tmp_path)


def test_an_installed_package_passes(tmp_path, recipe):
    result = CliRunner().invoke(main, ["validate", recipe, *sets(["model.quantization=nf4", "logging.tensorboard=true",
                                                                  "evaluation.generate_at_eval=true"])])
    assert result.exit_code == 0, result.output


def test_every_module_the_table_names_is_the_import_name_of_its_package():
    """The packages installed here (the dev extra) are found under the names the table checks."""
    for module in ("kiwipiepy", "bitsandbytes", "tensorboard"):
        assert installed(module)
    assert {need.module for need in NEEDS} == {"kiwipiepy", "bitsandbytes", "tensorboard", "wandb", "mlflow", "flash_attn", "unsloth"}

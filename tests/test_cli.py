"""CLI messages: one clear line, exit code 2, no traceback."""
from click.testing import CliRunner

from fastft.cli import DEBUG_OVERRIDES, main, recipe_overrides
from fastft.config.loader import load_recipe
from tests.factories import REPO

DEFAULT = REPO / "recipes" / "gemma3_270m_ko_summary.yaml"


def test_validate_ok():
    result = CliRunner().invoke(main, ["validate", str(DEFAULT)])
    assert result.exit_code == 0 and "ok" in result.output


def test_validate_reports_problems_with_exit_2():
    result = CliRunner().invoke(main, ["validate", str(DEFAULT), "--set", "training.epocs=2"])
    assert result.exit_code == 2
    assert "did you mean 'training.epochs'?" in result.output
    assert "Traceback" not in result.output


def test_missing_recipe_file():
    result = CliRunner().invoke(main, ["validate", "no/such.yaml"])
    assert result.exit_code == 2 and "recipe file not found" in result.output


def test_flags_become_overrides_that_win():
    items = recipe_overrides(["model.quantization=none"], True, True, True)
    recipe = load_recipe(DEFAULT, items)
    assert recipe.model.quantization == "nf4"
    assert recipe.dataset.instruction_augmentation
    assert (recipe.dataset.max_train_samples, recipe.dataset.max_eval_samples) == (50, 10)
    assert (recipe.training.epochs, recipe.training.batch_size, recipe.logging.report_to) == (1, 2, [])
    assert set(DEBUG_OVERRIDES) <= set(items)


def test_user_sets_override_debug_defaults():
    recipe = load_recipe(DEFAULT, recipe_overrides(["training.max_steps=3", "training.batch_size=1"], None, False, True))
    assert (recipe.training.max_steps, recipe.training.batch_size, recipe.dataset.max_train_samples) == (3, 1, 50)


def test_no_qlora_flag_turns_quantization_off():
    recipe = load_recipe(REPO / "recipes" / "qwen3_4b_summary.yaml", recipe_overrides([], False, False, False))
    assert recipe.model.quantization == "none"


def test_merge_missing_adapter_is_one_clear_message(tmp_path):
    result = CliRunner().invoke(main, ["merge", "--adapter", str(tmp_path / "nope"), "--out", str(tmp_path / "merged")])
    assert result.exit_code == 2
    assert "the adapter folder does not exist" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "merged").exists()


def test_unsloth_backend_without_gpu_is_refused_before_anything_is_written(tmp_path):
    result = CliRunner().invoke(main, ["run", str(DEFAULT), "--set", "model.backend=unsloth",
                                       "--set", f"output.dir={tmp_path / 'out'}", "--set", f"output.logs_dir={tmp_path / 'logs'}"])
    assert result.exit_code == 2
    assert "Unsloth needs an NVIDIA/AMD/Intel GPU" in result.output and "use model.backend: hf" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "logs").exists()


def test_resume_without_a_run_says_there_is_nothing_to_resume(tmp_path, tiny_llama):
    from tests.factories import recipe_for

    result = CliRunner().invoke(main, ["run", str(recipe_for(tmp_path, tiny_llama)), "--resume"])
    assert result.exit_code == 2
    assert "nothing to resume" in result.output and "run without --resume" in result.output
    assert not (tmp_path / "outputs").exists()

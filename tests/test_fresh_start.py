"""A run folder whose earlier attempt stopped before its first checkpoint holds nothing to resume: a plain rerun and
`--resume` both start afresh there and say so, keeping the earlier attempt's recipe in attempts/. A folder with a
checkpoint, a final model or a finished run keeps its refusal."""
import signal
import time

import pytest
from click.testing import CliRunner

from fastft.cli import main
from fastft.config.loader import load_recipe
from fastft.errors import FastftError
from fastft.runtime.outputs import METRICS, RECIPE_FILE, check_output_dir, last_checkpoint, open_output_dir
from tests.factories import recipe_for
from tests.test_resume import SHORT_RUN, fastft_run, sets


def early_stop_leftovers(folder, recipe):
    """What an attempt killed before its first checkpoint leaves: its recipe, the step-0 generations, a checkpoint
    that was being written."""
    open_output_dir(folder, recipe, "new")
    (folder / "generations").mkdir()
    (folder / "generations" / "epoch_0.csv").write_text("id,prediction\n")
    (folder / "checkpoints" / ".partial-checkpoint-2").mkdir(parents=True)


@pytest.mark.parametrize("mode, says", [
    ("new", "holds an earlier attempt that stopped before its first checkpoint: nothing to resume, starting afresh"),
    ("resume", "--resume: there is no checkpoint yet in"),
])
def test_an_attempt_without_a_checkpoint_is_started_afresh(tmp_path, tiny_llama, mode, says):
    recipe = load_recipe(recipe_for(tmp_path, tiny_llama))
    folder = tmp_path / "run"
    early_stop_leftovers(folder, recipe)
    changed = recipe.model_copy(deep=True)
    changed.training.learning_rate = 0.5  # the usual fix-and-rerun: the recipe may differ, nothing is resumed
    assert check_output_dir(folder, changed, mode) is None
    notice = open_output_dir(folder, changed, mode)
    assert says in notice and "attempts/" in notice
    assert sorted(p.name for p in folder.iterdir()) == ["attempts", RECIPE_FILE]
    records = [path.read_text() for path in sorted((folder / "attempts").iterdir())]
    assert len(records) == 2 and "learning_rate: 0.5" not in records[0] and "learning_rate: 0.5" in records[1]
    assert (folder / RECIPE_FILE).read_text() == records[1]


@pytest.mark.parametrize("keeps", ["checkpoint", "final_model", METRICS])
def test_a_folder_with_something_to_keep_is_still_refused(tmp_path, tiny_llama, keeps):
    recipe = load_recipe(recipe_for(tmp_path, tiny_llama))
    folder = tmp_path / "run"
    open_output_dir(folder, recipe, "new")
    if keeps == "checkpoint":
        (folder / "checkpoints" / "checkpoint-2").mkdir(parents=True)
        (folder / "checkpoints" / "checkpoint-2" / "trainer_state.json").write_text("{}")
    elif keeps == "final_model":
        (folder / "final_model").mkdir()
    else:
        (folder / METRICS).write_text("{}")
    changed = recipe.model_copy(deep=True)
    changed.training.learning_rate = 0.5
    with pytest.raises(FastftError, match="already holds a run"):
        check_output_dir(folder, changed, "new")
    assert open_output_dir(folder, recipe, "resume") is None


def test_a_rerun_after_a_kill_before_the_first_checkpoint_trains_to_the_end(tmp_path, tiny_llama):
    recipe_for(tmp_path, tiny_llama)
    run_dir = tmp_path / "outputs" / "tiny"
    killed = fastft_run(tmp_path, "killed")
    while killed.poll() is None and not list((run_dir / "attempts").glob("*")):
        time.sleep(0.005)
    killed.send_signal(signal.SIGKILL)  # the folder is written; the first checkpoint needs the model and two steps
    killed.wait()
    assert killed.returncode == -signal.SIGKILL, (tmp_path / "killed.out").read_text()
    assert last_checkpoint(run_dir / "checkpoints") is None

    rerun = CliRunner().invoke(main, ["run", str(tmp_path / "tiny.yaml"), *sets(SHORT_RUN)])
    assert rerun.exit_code == 0, rerun.output
    assert f"{run_dir} holds an earlier attempt that stopped before its first checkpoint" in rerun.output
    assert (run_dir / METRICS).exists() and (run_dir / "final_model" / "adapter_model.safetensors").exists()
    assert len(list((run_dir / "attempts").iterdir())) == 2

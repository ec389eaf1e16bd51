"""Checkpoints every save_steps, written atomically, and a run killed with SIGKILL that resumes to the same result."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from fastft.cli import main
from fastft.config.loader import load_recipe
from fastft.errors import FastftError
from fastft.runtime.outputs import METRICS, RECIPE_FILE, check_output_dir, last_checkpoint, recipe_yaml
from fastft.training.args import sft_config
from tests.factories import fastft_trainer, recipe_for

SHORT_RUN = ["dataset.eval=null", "dataset.max_train_samples=12", "dataset.max_prompt_tokens=64", "dataset.max_answer_tokens=16",
             "training.batch_size=2", "training.grad_accum=2",
             "training.max_steps=12", "training.save_steps=2", "training.logging_steps=1"]


def sets(items):
    return [arg for item in items for arg in ("--set", item)]


@pytest.mark.parametrize("has_eval", [True, False])
def test_save_steps_saves_and_evaluates_on_one_interval(tmp_path, tiny_llama, has_eval):
    recipe = load_recipe(recipe_for(tmp_path, tiny_llama), ["training.save_steps=3"])
    args = sft_config(recipe, str(tmp_path), has_eval, torch.float32)  # transformers validates the pairing here
    assert (args.save_strategy, args.save_steps) == ("steps", 3)
    assert (args.eval_strategy, args.eval_steps, args.load_best_model_at_end) == (
        ("steps", 3, True) if has_eval else ("no", None, False))


def test_without_save_steps_checkpoints_follow_epochs_and_need_an_eval_split(tmp_path, tiny_llama):
    recipe = load_recipe(recipe_for(tmp_path, tiny_llama))
    assert sft_config(recipe, str(tmp_path), True, torch.float32).save_strategy == "epoch"
    assert sft_config(recipe, str(tmp_path), False, torch.float32).save_strategy == "no"


def test_save_steps_must_be_a_positive_step_count(tmp_path, tiny_llama):
    with pytest.raises(FastftError, match=r"training.save_steps: Input should be greater than 0 \(got 0\)"):
        load_recipe(recipe_for(tmp_path, tiny_llama), ["training.save_steps=0"])


def adapter(folder):
    return load_file(folder / "adapter_model.safetensors")


def test_rotation_keeps_the_newest_and_the_best_and_the_run_ends_on_the_best(tmp_path, tiny_llama):
    result = CliRunner().invoke(main, ["run", str(recipe_for(tmp_path, tiny_llama)), *sets([
        "dataset.max_train_samples=8", "dataset.max_eval_samples=4", "dataset.max_prompt_tokens=64", "training.batch_size=2", "training.grad_accum=1",
        "training.max_steps=4", "training.save_steps=1", "training.save_total_limit=2", "training.learning_rate=0.05"])])
    assert result.exit_code == 0, result.output
    checkpoints = tmp_path / "outputs" / "tiny" / "checkpoints"
    state = json.loads((checkpoints / "checkpoint-4" / "trainer_state.json").read_text())
    evals = {e["step"]: e["eval_loss"] for e in state["log_history"] if "eval_loss" in e and e["step"] > 0}
    assert sorted(evals) == [1, 2, 3, 4]
    best = min(evals, key=evals.get)
    kept = {4, best} if best != 4 else {3, 4}  # at most save_total_limit, never the newest or the best
    assert sorted(p.name for p in checkpoints.iterdir()) == sorted(f"checkpoint-{s}" for s in kept)
    assert state["best_model_checkpoint"] == str(checkpoints / f"checkpoint-{best}")
    final, chosen = adapter(tmp_path / "outputs" / "tiny" / "final_model"), adapter(checkpoints / f"checkpoint-{best}")
    assert all(torch.equal(final[k], chosen[k]) for k in chosen)


class DiskFullOnOptimizerSave:
    """torch.save that, on the `after`-th optimizer file, writes half of it and fails like a full disk."""

    def __init__(self, after: int):
        self.after, self.seen, self.save = after, 0, torch.save

    def __call__(self, obj, f, *args, **kwargs):
        if str(f).endswith("optimizer.pt"):
            self.seen += 1
            if self.seen == self.after:
                with open(f, "wb") as out:
                    out.write(b"\x80\x02half")
                raise OSError(28, "No space left on device")
        return self.save(obj, f, *args, **kwargs)


def short_trainer(tmp_path, model_dir):
    recipe = load_recipe(recipe_for(tmp_path, model_dir), [*SHORT_RUN, "training.max_steps=4"])
    trainer, _ = fastft_trainer(recipe, tmp_path / "checkpoints", None)
    trainer.args.save_strategy = "steps"  # the factory turns saving off
    return trainer


def test_a_crash_while_saving_leaves_no_checkpoint_and_resume_takes_the_previous_one(tmp_path, tiny_llama, monkeypatch):
    checkpoints = tmp_path / "checkpoints"
    monkeypatch.setattr(torch, "save", DiskFullOnOptimizerSave(after=2))
    with pytest.raises(FastftError, match="checkpoint-4"):  # disk full is one fastft error, the partial save removed
        short_trainer(tmp_path, tiny_llama).train()
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-2"]
    assert last_checkpoint(checkpoints) == checkpoints / "checkpoint-2"

    monkeypatch.undo()
    resumed = short_trainer(tmp_path, tiny_llama)
    resumed.train(resume_from_checkpoint=str(last_checkpoint(checkpoints)))
    assert resumed.state.global_step == 4
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-2", "checkpoint-4"]  # the leftover is gone
    assert torch.load(checkpoints / "checkpoint-4" / "optimizer.pt", weights_only=True)["state"]


def test_last_checkpoint_takes_only_complete_numbered_folders(tmp_path):
    for name, complete in [("checkpoint-2", True), ("checkpoint-3", False), ("checkpoint-9-backup", True),
                           (".partial-checkpoint-4", True)]:
        (tmp_path / name).mkdir()
        if complete:
            (tmp_path / name / "trainer_state.json").write_text("{}")
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-2"


def test_a_plain_run_resumes_only_an_unfinished_run_of_the_same_recipe(tmp_path, tiny_llama):
    recipe = load_recipe(recipe_for(tmp_path, tiny_llama))
    folder = tmp_path / "run"
    checkpoint = folder / "checkpoints" / "checkpoint-4"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text("{}")
    (folder / RECIPE_FILE).write_text(recipe_yaml(recipe), encoding="utf-8")
    assert check_output_dir(folder, recipe, "new") == checkpoint  # what a crash or a kill leaves behind

    changed = recipe.model_copy(deep=True)
    changed.training.learning_rate = 0.5
    with pytest.raises(FastftError, match="already holds a run"):
        check_output_dir(folder, changed, "new")
    (folder / METRICS).write_text("{}")  # finished: retraining it needs --resume or --overwrite
    with pytest.raises(FastftError, match="already holds a run"):
        check_output_dir(folder, recipe, "new")


def fastft_cli(folder, name, *args):
    """`python -m fastft ARGS` in a child process, one torch thread so two runs do the same arithmetic. Its output
    goes to folder/<name>.out: a pipe nobody reads while polling would fill and stall the child."""
    env = dict(os.environ, TRITON_INTERPRET="1", FASTFT_KERNEL_BACKEND="torch", HF_HUB_OFFLINE="1",
               OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    with open(folder / f"{name}.out", "w") as out:
        return subprocess.Popen([sys.executable, "-m", "fastft", *args], cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT)


def fastft_run(folder, name, *extra):
    """`fastft run` of folder/tiny.yaml with SHORT_RUN, in a child process (fastft_cli)."""
    return fastft_cli(folder, name, "run", str(folder / "tiny.yaml"), *sets(SHORT_RUN), *extra)


def finished(process, folder, name) -> str:
    process.wait()
    output = (folder / f"{name}.out").read_text()
    assert process.returncode == 0, output
    return output


def kill_after_second_checkpoint(process, checkpoints) -> int:
    """SIGKILL the run as soon as a checkpoint beyond the first is complete; the step it can resume from."""
    while process.poll() is None:
        found = last_checkpoint(checkpoints) if checkpoints.exists() else None
        if found and int(found.name.rsplit("-", 1)[1]) >= 4:
            process.send_signal(signal.SIGKILL)
            process.wait()
            break
        time.sleep(0.005)
    assert process.returncode == -signal.SIGKILL, "the run ended before it was killed"
    return int(last_checkpoint(checkpoints).name.rsplit("-", 1)[1])


def step_log(run_dir):
    state = json.loads((run_dir / "checkpoints" / "checkpoint-12" / "trainer_state.json").read_text())
    return {e["step"]: (e["loss"], e["grad_norm"], e["learning_rate"]) for e in state["log_history"] if "loss" in e}


def test_a_run_killed_with_sigkill_resumes_to_the_uninterrupted_result(tmp_path, tiny_llama):
    """LoRA dropout stays on (0.05), so the resumed run matches only if data position, optimizer, scheduler and the
    RNG that draws the dropout masks all come back from the checkpoint."""
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    for folder in (reference_dir, killed_dir):
        folder.mkdir()
        recipe_for(folder, tiny_llama)
    killed = fastft_run(killed_dir, "killed")
    resumed_from = kill_after_second_checkpoint(killed, killed_dir / "outputs" / "tiny" / "checkpoints")
    assert 4 <= resumed_from < 12
    resumed = fastft_run(killed_dir, "resumed", "--resume")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the children's arithmetic; in this process it saves a third interpreter start
    try:
        reference = CliRunner().invoke(main, ["run", str(reference_dir / "tiny.yaml"), *sets(SHORT_RUN)])
    finally:
        torch.set_num_threads(threads)
    assert reference.exit_code == 0, reference.output
    output = finished(resumed, killed_dir, "resumed")
    assert f"resuming from {killed_dir / 'outputs' / 'tiny' / 'checkpoints' / f'checkpoint-{resumed_from}'}" in output

    runs = {name: folder / "outputs" / "tiny" for name, folder in (("reference", reference_dir), ("killed", killed_dir))}
    assert not list((runs["killed"] / "checkpoints").glob(".partial-*"))
    expected, got = step_log(runs["reference"]), step_log(runs["killed"])
    assert sorted(got) == list(range(1, 13))
    for step in range(resumed_from + 1, 13):
        assert got[step] == pytest.approx(expected[step], abs=1e-6), step
    want, have = adapter(runs["reference"] / "final_model"), adapter(runs["killed"] / "final_model")
    assert want.keys() == have.keys()
    assert max((want[k] - have[k]).abs().max().item() for k in want) <= 1e-6

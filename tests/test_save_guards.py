"""A full disk at save time ends the run with one line and keeps the last complete checkpoint, which a rerun
resumes; the pre-flight estimate of memory and disk is shown at start-up and refuses a run that cannot fit."""
import errno
import subprocess

import peft.peft_model
import pytest
import torch
from click.testing import CliRunner

from fastft.cli import main
from fastft.runtime.outputs import last_checkpoint
from tests.factories import recipe_for
from tests.test_hostile import assert_one_clean_error
from tests.test_resume import SHORT_RUN, sets

RUN = [*SHORT_RUN, "training.max_steps=6"]


class DiskFullAt:
    """Wraps a save function; its `after`-th call on a matching path writes a few bytes and fails like a full disk."""

    def __init__(self, save, suffix: str, after: int):
        self.save, self.suffix, self.after, self.seen = save, suffix, after, 0

    def __call__(self, obj, f, *args, **kwargs):
        if str(f).endswith(self.suffix):
            self.seen += 1
            if self.seen == self.after:
                with open(f, "wb") as out:
                    out.write(b"half")
                raise OSError(errno.ENOSPC, "No space left on device")
        return self.save(obj, f, *args, **kwargs)


def run(recipe, *extra):
    return CliRunner().invoke(main, ["run", str(recipe), *sets(RUN), *extra])


@pytest.mark.parametrize("target, patch, suffix, after, kept", [
    ("checkpoint checkpoint-4", (torch, "save"), "optimizer.pt", 2, 2),
    ("final_model", (peft.peft_model, "safe_save_file"), "adapter_model.safetensors", 4, 6),
], ids=["checkpoint", "final_model"])
def test_a_full_disk_at_save_time_keeps_the_last_checkpoint_and_a_rerun_resumes(tmp_path, tiny_llama, monkeypatch,
                                                                                 target, patch, suffix, after, kept):
    recipe = recipe_for(tmp_path, tiny_llama)
    run_dir = tmp_path / "outputs" / "tiny"
    monkeypatch.setattr(*patch, DiskFullAt(getattr(*patch), suffix, after))
    full = run(recipe)
    where = run_dir / "checkpoints" if target.startswith("checkpoint") else run_dir
    assert_one_clean_error(full.exit_code, full.stderr, f"the disk is full: saving {target} into {where} needs about ")
    previous = run_dir / "checkpoints" / f"checkpoint-{kept}"
    assert f"the last complete checkpoint {previous} is untouched" in full.stderr
    assert last_checkpoint(run_dir / "checkpoints") == previous
    assert not list(run_dir.rglob(".partial-*")) and not (run_dir / "final_model").exists()

    monkeypatch.undo()
    rerun = run(recipe)
    assert rerun.exit_code == 0, rerun.output
    assert f"resuming from {previous}" in rerun.stderr
    assert (run_dir / "final_model" / "adapter_model.safetensors").exists()


def test_the_start_up_summary_shows_the_memory_and_disk_estimates(tmp_path, tiny_llama):
    result = run(recipe_for(tmp_path, tiny_llama), "--set", "training.max_steps=1")
    assert result.exit_code == 0, result.output
    assert "  memory     about " in result.stderr and " RAM available" in result.stderr
    assert "  disk       1 checkpoint(s) of " in result.stderr and f"free in {tmp_path}" in result.stderr


def test_a_run_too_big_for_memory_is_refused_before_loading_naming_the_keys_and_force_runs_it(tmp_path, tiny_llama):
    recipe = recipe_for(tmp_path, tiny_llama)
    huge = ["--set", "training.batch_size=50000000"]
    refused = run(recipe, *huge)
    assert_one_clean_error(refused.exit_code, refused.stderr, "the run needs about ")
    for key in ("training.batch_size", "training.grad_accum", "dataset.max_prompt_tokens",
                "training.gradient_checkpointing", "QLoRA", "--force"):
        assert key in refused.stderr
    assert "RAM available" in refused.stderr and "activations" in refused.stderr
    assert not (tmp_path / "outputs").exists()
    forced = run(recipe, *huge, "--set", "training.max_steps=1", "--force")
    assert forced.exit_code == 0, forced.output


def test_a_run_whose_checkpoints_cannot_fit_on_disk_is_refused(tmp_path, tiny_llama):
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        refused = run(recipe_for(tmp_path, tiny_llama), "--set", f"output.dir={small}")
        assert_one_clean_error(refused.exit_code, refused.stderr, "checkpoint(s) and final_model need about ")
        assert f"{small} has 0.1 MiB free" in refused.stderr and "training.save_total_limit" in refused.stderr
        assert not any(small.iterdir())
    finally:
        subprocess.run(["umount", str(small)], check=True)

"""A full disk at save time ends the run with one line and keeps the last complete checkpoint, which a rerun
resumes."""
import errno

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

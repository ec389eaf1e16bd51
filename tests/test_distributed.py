"""Data-parallel `fastft run` under torchrun: two CPU processes on gloo train exactly what one process trains with
the same global batch, and only rank 0 writes."""
import json
import os
import subprocess
import sys

import pytest
import torch.distributed
from click.testing import CliRunner

from fastft.cli import main
from fastft.training.outputs import last_checkpoint
from tests.factories import REPO, recipe_for

pytestmark = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="this torch build has no torch.distributed gloo backend",
)

# 24 examples, global batch 8: three optimizer steps, no partial batch that DDP would fill by repeating examples.
# Dropout 0 so neither run draws randomness after the (seeded, identical) LoRA initialisation.
COMMON = ["--set", "lora.dropout=0", "--set", "model.dtype=float32", "--set", "training.epochs=1",
          "--set", "training.grad_accum=2", "--set", "training.logging_steps=1",
          "--set", "dataset.max_train_samples=24", "--set", "dataset.max_eval_samples=2"]


def torchrun(recipe, cwd, *extra):
    """`torchrun --standalone --nproc_per_node 2 -m fastft run RECIPE` (standalone picks a free port)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "fastft", "run", str(recipe), *COMMON, *extra],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )


def step_losses(run_dir) -> list[float]:
    """The training loss of every optimizer step, at full precision, from the last checkpoint's trainer state."""
    state = json.loads((last_checkpoint(run_dir / "outputs" / "tiny" / "checkpoints") / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path, tiny_llama):
    ddp, single, cwd = tmp_path / "ddp", tmp_path / "single", tmp_path / "cwd"
    for folder in (ddp, single, cwd):
        folder.mkdir()

    result = torchrun(recipe_for(ddp, tiny_llama), cwd, "--set", "training.batch_size=2")
    assert result.returncode == 0, result.stdout + result.stderr
    alone = CliRunner().invoke(main, ["run", str(recipe_for(single, tiny_llama)), *COMMON, "--set", "training.batch_size=4"])
    assert alone.exit_code == 0, alone.output

    # Same examples in each optimizer step (one seeded permutation, cut into per-rank batches), the loss of each rank
    # normalised by the token count of the whole global batch: the curves agree to float rounding.
    expected, got = step_losses(single), step_losses(ddp)
    assert len(got) == len(expected) == 3
    assert got == pytest.approx(expected, rel=1e-5)
    assert "2 x 2 accumulation x 2 processes = 8 examples per optimizer step" in result.stderr

    # Rank 0 alone wrote: one output folder, one attempt (rank 1 would have added its own), one log with each line
    # once, nothing in the working directory; the run folder holds what a single-process run leaves.
    out = ddp / "outputs" / "tiny"
    assert sorted(p.name for p in ddp.iterdir()) == ["logs", "outputs", "tiny.yaml"]
    assert [p.name for p in (ddp / "outputs").iterdir()] == ["tiny"]
    assert len(list((out / "attempts").iterdir())) == 1
    logs = list((ddp / "logs").rglob("*.log"))
    assert len(logs) == 1 and logs[0].read_text(encoding="utf-8").count("eval loss after training") == 1
    assert list(cwd.iterdir()) == []
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (single / "outputs" / "tiny").iterdir())

    # A refusal on rank 0 (the folder now holds a run) ends both ranks with fastft's message, no traceback of ours.
    again = torchrun(recipe_for(ddp, tiny_llama), cwd, "--set", "training.batch_size=2")
    assert again.returncode != 0
    assert again.stderr.count("already holds a run") == 2, again.stderr
    assert str(REPO / "fastft") not in again.stderr  # no frame of fastft's code: the error was handled, not raised
    assert len(list((out / "attempts").iterdir())) == 1

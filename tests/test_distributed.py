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
from fastft.runtime.outputs import last_checkpoint
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


# --- recipes/distributed/: accelerate configs for GPU engines, checked with accelerate's own launcher code ---------
# `accelerate launch --config_file X` validates the file, turns it into the ranks' environment, and each rank builds
# its DeepSpeed / FSDP plugin from that environment. The same three steps run here; only the GPUs are missing.
DISTRIBUTED = REPO / "recipes" / "distributed"


def plugin_environment(config, monkeypatch):
    """Set the environment `accelerate launch --config_file config -m fastft run ...` gives every rank; returns the
    loaded config."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(config), "-m", "fastft", "run", "recipe.yaml"])
    args, loaded, _ = _validate_launch_command(args)
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = list(loaded.deepspeed_config)  # as launch_command does
        env = prepare_deepspeed_cmd_env(args)[1]
    else:
        env = prepare_multi_gpu_env(args)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return loaded


def launcher_options() -> set[str]:
    from accelerate.commands.launch import launch_command_parser

    return set(vars(launch_command_parser().parse_args(["script.py"])))


@pytest.mark.parametrize("name, stage", [("zero2.yaml", 2), ("zero3.yaml", 3)])
def test_deepspeed_configs_build_accelerates_plugin(name, stage, monkeypatch):
    from accelerate.utils import DeepSpeedPlugin

    loaded = plugin_environment(DISTRIBUTED / name, monkeypatch)
    # accelerate copies unknown keys onto its arguments without a word; each must be an option it reads
    assert set(loaded.deepspeed_config) <= launcher_options()
    config = DeepSpeedPlugin().deepspeed_config
    assert config["zero_optimization"]["stage"] == stage
    # left to Trainer, which fills them from the recipe's batch_size, grad_accum and max_grad_norm
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping"):
        assert config[key] == "auto"
    if stage == 3:  # otherwise final_model/ would get an empty adapter from sharded weights
        assert config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


def test_fsdp_config_wraps_each_decoder_layer_of_every_supported_family(monkeypatch):
    from accelerate.utils import FullyShardedDataParallelPlugin
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    from fastft.models.families import FAMILIES

    loaded = plugin_environment(DISTRIBUTED / "fsdp.yaml", monkeypatch)
    assert set(loaded.fsdp_config) <= launcher_options()
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and "FULL_STATE_DICT" in str(plugin.state_dict_type)
    # No class list: accelerate wraps the model's _no_split_modules, which names each family's decoder layer.
    assert plugin.auto_wrap_policy is transformer_auto_wrap_policy and plugin.transformer_cls_names_to_wrap is None
    for family in FAMILIES.values():
        assert family.cls("ForCausalLM")._no_split_modules == [family.prefix + "DecoderLayer"], family.name

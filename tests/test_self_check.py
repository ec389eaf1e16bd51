"""The pre-training self-check, run on the CPU through Triton's interpreter (the conftest sets TRITON_INTERPRET=1):
every kind passes on correct kernels, and a kernel that raises (standing for OutOfResources on a real GPU) or
returns wrong numbers is turned off with a message saying how to force either path."""
import pytest
import torch
from triton.runtime.errors import OutOfResources

from fastft.kernels import triton_norm, triton_rope
from fastft.patching.self_check import SWITCHES, Shapes, check_kind, run_self_check, shapes_of
from tests.test_patch_models import tiny_peft

CPU = torch.device("cpu")
ROWS = 16  # the interpreter runs each program in Python


def shapes(dtype=torch.float32, **changes):
    widths = dict(dtype=dtype, hidden=64, intermediate=128, rank=8, head_dim=16, vocab=300, activation="geglu",
                  norm_offset=1.0, softcap=30.0, dropout=0.05)
    return Shapes(**{**widths, **changes})


@pytest.mark.parametrize("dtype, quant", [(torch.float32, None), (torch.bfloat16, "nf4")], ids=["fp32", "qlora"])
def test_every_kind_passes_on_the_kernels_as_they_are(dtype, quant):
    # QLoRA: LoRA products and logits in bf16, norms and RoPE on the fp32 residual stream
    results = run_self_check(shapes(dtype, quant_type=quant, residual_dtype=torch.float32), CPU, rows=ROWS)
    assert [r.kind for r in results] == list(SWITCHES)
    for result in results:
        assert result.error is None, result.line()
        assert result.line().startswith(f"self-check {result.kind}: ok (largest relative error")
    assert [r.detail.split(", ")[-1] for r in results] == (
        ["float32"] * 5 if dtype == torch.float32 else ["bfloat16", "bfloat16", "float32", "float32", "bfloat16"])


def test_a_launch_error_turns_the_kind_off_and_says_how_to_force_either_path(monkeypatch):
    def out_of_shared_memory(*args, **kwargs):
        raise OutOfResources(262_144, 101_376, "shared memory")

    monkeypatch.setattr(triton_norm, "rms_norm_forward", out_of_shared_memory)
    result = check_kind("rms_norm", shapes(), CPU, rows=ROWS)
    assert result.error.startswith("OutOfResources: out of resource: shared memory, Required: 262144")
    line = result.line()
    assert line.startswith("self-check rms_norm: OFF for this run, the model's own code runs instead: OutOfResources")
    for way in ("FASTFT_KERNEL_SELF_CHECK=0", "FASTFT_KERNEL_BACKEND=torch", "kernels.rms_norm: false"):
        assert way in line
    assert check_kind("rope", shapes(), CPU, rows=ROWS).error is None  # only the failing kind


def test_wrong_numbers_turn_the_kind_off(monkeypatch):
    rotate = triton_rope.rope_rotate
    monkeypatch.setattr(triton_rope, "rope_rotate", lambda *args, **kwargs: rotate(*args, **kwargs) * 1.001)
    result = check_kind("rope", shapes(), CPU, rows=ROWS)
    assert result.error.startswith("triton differs from the PyTorch path: largest relative error 1.0e-03"), result.error
    assert result.error.endswith("> 1e-04")


def test_dropout_variant_is_launched(monkeypatch):
    """LoRA dropout compiles separate kernels (the A6000 crash of issue 12): the check must launch them."""
    from fastft.kernels import triton_lora

    def fails_with_dropout(x, p, scale, dropout_p=0.0, seed=0, _skinny=triton_lora.skinny):
        if dropout_p:
            raise OutOfResources(131_072, 101_376, "shared memory")
        return _skinny(x, p, scale, dropout_p, seed)

    monkeypatch.setattr(triton_lora, "skinny", fails_with_dropout)
    assert check_kind("lora_linear", shapes(dropout=0.0), CPU, rows=ROWS).error is None
    assert "OutOfResources" in check_kind("lora_linear", shapes(), CPU, rows=ROWS).error


def test_backend_variable_is_restored(monkeypatch):
    import os

    monkeypatch.setenv("FASTFT_KERNEL_BACKEND", "auto")
    check_kind("rms_norm", shapes(), CPU, rows=ROWS)
    assert os.environ["FASTFT_KERNEL_BACKEND"] == "auto"


@pytest.mark.parametrize("family, expected", [
    ("gemma3", dict(activation="geglu", norm_offset=1.0, softcap=30.0, dropout=0.1)),
    ("llama", dict(activation="swiglu", norm_offset=0.0, softcap=None, dropout=0.1)),
])
def test_shapes_come_from_the_model(family, expected):
    model = tiny_peft(family, dropout=0.1)
    widths = dict(dtype=torch.float32, residual_dtype=torch.float32, hidden=40, intermediate=72, rank=4, head_dim=10,
                  vocab=157, quant_type=None)
    assert shapes_of(model) == Shapes(**widths, **expected)
    assert shapes_of(model, torch.bfloat16).dtype == torch.bfloat16


def test_shapes_of_a_qlora_model(tmp_path):
    """After prepare_model_for_kbit_training the residual stream is fp32 while LoRA computes in the run's dtype."""
    widths = shapes_of(tiny_peft("llama", tmp_path), torch.bfloat16)
    assert (widths.dtype, widths.residual_dtype, widths.quant_type) == (torch.bfloat16, torch.float32, "nf4")


def out_of_shared_memory(*args, **kwargs):
    raise OutOfResources(262_144, 101_376, "shared memory")


def test_apply_kernels_leaves_a_failing_kind_unpatched_and_the_loss_unchanged(monkeypatch):
    """The interpreter stands in for a GPU; rms_norm's Triton launch fails as it would with OutOfResources."""
    from fastft.patching import apply_kernels
    from fastft.patching.loss import prompt_masked_loss
    from tests.kernels.numerics import assert_rel_close
    from tests.test_patch_models import prompt_masked_batch

    model, batch = tiny_peft("gemma3"), prompt_masked_batch(batch=2, length=9, prompt=5)
    with torch.no_grad():
        ref = prompt_masked_loss(model, batch)  # unpatched; the conftest's PyTorch kernel path for the loss
    monkeypatch.setattr(triton_norm, "rms_norm_forward", out_of_shared_memory)
    report = apply_kernels(model, check_backend="triton")
    assert report.counts["rms_norm"] == 0 and report.counts["lora"] == 14 and report.counts["rope"] == 2
    assert not report.uses("rms_norm") and report.uses("loss") and report.uses("mlp")
    lines = report.lines()
    assert any(line.startswith("self-check rms_norm: OFF for this run") for line in lines), lines
    assert [line.split(":")[0] for line in lines if ": ok (" in line] == [
        "self-check lora_linear", "self-check lora_mlp", "self-check rope", "self-check loss"]
    monkeypatch.setenv("FASTFT_KERNEL_BACKEND", "triton")
    with torch.no_grad():
        assert_rel_close(prompt_masked_loss(model, batch), ref, tol=1e-5, name="loss")


def test_a_failing_loss_kernel_turns_the_prompt_masked_loss_off(monkeypatch):
    from fastft.kernels import triton_ce
    from fastft.patching import apply_kernels

    monkeypatch.setattr(triton_ce, "ce_rows_triton", out_of_shared_memory)
    report = apply_kernels(tiny_peft("llama"), {"lora": False, "mlp": False, "rms_norm": False, "rope": False},
                           check_backend="triton")
    assert not report.uses("loss")
    assert [line for line in report.lines() if line.startswith("self-check")] == [
        "self-check loss: OFF for this run, the model's own code runs instead: OutOfResources: out of resource: "
        "shared memory, Required: 262144, Hardware limit: 101376. Reducing block sizes or `num_stages` may help.; "
        "FASTFT_KERNEL_SELF_CHECK=0 keeps it unchecked; FASTFT_KERNEL_BACKEND=torch runs fastft's PyTorch path of "
        "every kernel; kernels.loss: false skips it"]


def test_on_the_cpu_the_check_is_skipped():
    from fastft.patching import apply_kernels

    report = apply_kernels(tiny_peft("llama"))
    assert "self-check skipped on CPU: PyTorch paths run" in report.lines()
    assert all(report.uses(switch) for switch in SWITCHES.values())


def test_the_check_runs_on_the_device_the_run_trains_on(monkeypatch):
    """A LoRA base is patched while still on the CPU, and the Trainer moves it to the GPU afterwards: the check
    follows the run's device, not the parameters' (on the H200 it said "skipped on CPU" for a GPU run)."""
    from fastft.patching import apply_kernels, self_check

    checked_on = []
    monkeypatch.setattr(self_check, "run_self_check", lambda shapes, device, name, kinds: checked_on.append(device) or [])
    monkeypatch.setenv("FASTFT_KERNEL_BACKEND", "auto")
    report = apply_kernels(tiny_peft("llama"), device="cuda")
    assert checked_on == [torch.device("cuda")]
    assert not any("skipped" in line for line in report.lines()), report.lines()

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


@pytest.mark.parametrize("dtype, quant", [(torch.float32, None), (torch.bfloat16, "nf4")], ids=["fp32", "bf16-nf4"])
def test_every_kind_passes_on_the_kernels_as_they_are(dtype, quant):
    results = run_self_check(shapes(dtype, quant_type=quant), CPU, rows=ROWS)
    assert [r.kind for r in results] == list(SWITCHES)
    for result in results:
        assert result.error is None, result.line()
        assert result.line().startswith(f"self-check {result.kind}: ok (largest relative error")


def test_a_launch_error_turns_the_kind_off_and_says_how_to_force_either_path(monkeypatch):
    def out_of_shared_memory(*args, **kwargs):
        raise OutOfResources(262_144, 101_376, "shared memory")

    monkeypatch.setattr(triton_norm, "rms_norm_forward", out_of_shared_memory)
    result = check_kind("rms_norm", shapes(), CPU, rows=ROWS)
    assert result.error.startswith("OutOfResources: out of resource: shared memory, Required: 262144")
    line = result.line()
    assert line.startswith("self-check rms_norm: OFF for this run, the model's own code runs instead: OutOfResources")
    for way in ("kernels.self_check: false", "FASTFT_KERNEL_BACKEND=torch", "kernels.rms_norm: false"):
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
    widths = dict(dtype=torch.float32, hidden=40, intermediate=72, rank=4, head_dim=10, vocab=157, quant_type=None)
    assert shapes_of(model) == Shapes(**widths, **expected)
    assert shapes_of(model, torch.bfloat16).dtype == torch.bfloat16

"""One training step of a tiny Llama and Gemma 3 in the state a GPU run trains in, on the CPU: bf16 autocast over
the forward (what accelerate wraps the model's forward in when Trainer runs bf16), the backward after it.

- QLoRA: NF4 base (bitsandbytes, compute dtype bf16) through fastft's own load_base_model and add_lora
  (prepare_model_for_kbit_training leaves every other parameter and the activations in fp32).
- LoRA: bf16 base, PEFT's fp32 adapters, lora.dropout 0.05.

The patched step is the one FastftTrainer.compute_loss takes (apply_kernels, then the prompt-masked loss inside
the model's forward); the reference is the same model before patching with transformers' own loss
(Trainer.compute_loss, kernels.loss off). The kernels and PEFT draw different dropout masks, so parity runs with
the dropout modules in eval mode (p = 0), and a separate run checks that dropout 0.05 really goes through the
kernel and trains.
"""
import contextlib

import pytest
import torch

from fastft.config.schema import KernelsSection, LoraSection, ModelSection, QloraSection
from fastft.models.loader import add_lora, device_name, load_base_model
from fastft.patching import apply_kernels
from fastft.patching import lora as lora_patch
from fastft.patching.loss import add_masked_loss_forward
from tests.kernels.numerics import assert_rel_close, rel_err
from tests.test_patch_models import SEVEN, lora_grads, on, prompt_masked_batch, tiny_base

FAMILIES = ["llama", "gemma3"]
MODES = ["qlora", "lora"]
DROPOUT = 0.05
# The interpreter runs every Triton program in Python: a smaller batch keeps those runs to seconds.
SMALL = dict(batch=2, length=9, prompt=5)


def autocast(model):
    return torch.autocast(model.device.type, dtype=torch.bfloat16)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    def folder(family):
        path = tmp_path_factory.getbasetemp() / f"autocast-step-{family}"
        if not (path / "config.json").exists():
            tiny_base(family).save_pretrained(path)
        return path
    return folder


def build(folder, mode: str, seed: int = 1, compute: str = "bfloat16", device="cpu"):
    """Base and adapters as `fastft run` makes them on a bf16 GPU, B drawn non-zero so every LoRA gradient moves.
    compute="float32": the same weights (bf16 values, the same NF4 codes) computing in fp32."""
    quantized = mode == "qlora"
    model_cfg = ModelSection(name=str(folder), dtype="bfloat16", quantization="nf4" if quantized else "none",
                             attn_implementation="sdpa")
    base, _ = load_base_model(model_cfg, QloraSection(compute_dtype=compute), str(folder))
    if not quantized:  # load_base_model puts a 4-bit base on the GPU where there is one (and this test's device)
        base = base.to(device, getattr(torch, compute))
    torch.manual_seed(seed)
    model = add_lora(base, LoraSection(r=4, alpha=8, dropout=DROPOUT, target_modules=SEVEN), quantized, False, [])
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.2)
    return model.train()


def step(model, batch, mixed: bool = True, **fastft_loss) -> tuple[torch.Tensor, dict]:
    """Forward under autocast (mixed), backward after it: transformers' loss, or fastft's with masked_loss=True."""
    model.zero_grad()
    with autocast(model) if mixed else contextlib.nullcontext():
        out = model(**on(model.device, batch), **fastft_loss)
    loss = out if fastft_loss else out.loss
    loss.backward()
    return loss.detach(), lora_grads(model)


def patch(model):
    report = apply_kernels(model, KernelsSection())
    add_masked_loss_forward(model)
    return report


def dropout_off(model):
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.eval()
    return model


def flat(grads: dict) -> torch.Tensor:
    return torch.cat([grads[name].flatten() for name in sorted(grads)])


def assert_as_accurate(grad, ref, exact, name, factor):
    """grad is within 1e-2 of the fp32 gradient, or at most `factor` times as far from it as transformers+PEFT's."""
    err, ref_err = rel_err(grad, exact), rel_err(ref, exact)
    assert err <= max(1e-2, factor * ref_err), f"{name}: {err:.2e} from fp32, transformers+PEFT {ref_err:.2e}"


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("family", FAMILIES)
def test_patched_step_matches_unpatched_under_autocast(family, mode, backend, device, checkpoints, monkeypatch):
    if mode == "qlora" and device.type != device_name():
        pytest.skip(f"fastft loads a 4-bit base on the {device_name()} on this machine")
    model = build(checkpoints(family), mode, device=device)
    assert model.get_base_model().model.layers[0].mlp.gate_proj.lora_dropout["default"].p == DROPOUT
    dropout_off(model)
    batch = prompt_masked_batch(**SMALL) if backend == "triton" and device.type == "cpu" else prompt_masked_batch()
    exact = dropout_off(build(checkpoints(family), mode, compute="float32", device=device))
    _, exact_grads = step(exact, batch, mixed=False)
    ref_loss, ref_grads = step(model, batch)
    report = patch(model)
    expected = {"lora": 14, "mlp": 2, "rms_norm": 5 if family == "llama" else 13, "rope": 2}
    if device.type == "cpu":  # fastft's block attention serves the CPU; a GPU keeps the model's own attention
        expected["attention"] = 2
    assert report.counts == expected, report.lines()
    assert not report.fallbacks, report.lines()
    monkeypatch.setenv("FASTFT_KERNEL_BACKEND", backend)
    loss, grads = step(model, batch, masked_loss=True)
    assert loss.dtype == torch.float32
    assert_rel_close(loss, ref_loss, tol=1e-2, name="loss")
    assert grads.keys() == ref_grads.keys() and len(grads) == 28
    for name, grad in grads.items():
        assert grad.dtype == torch.float32, name  # PEFT keeps adapters in fp32; their grads must stay there
        assert torch.isfinite(grad).all(), name
        assert_as_accurate(grad, ref_grads[name], exact_grads[name], name, factor=3)
    # Two bf16 runs of this backward cannot agree to 1e-2: transformers+PEFT's own LoRA gradients are 1.2-6e-2 from
    # the same step in fp32 (measured; the wide weights that make kernel bugs visible amplify rounding). So each is
    # held against fp32: all LoRA gradients together no farther than twice transformers', each tensor 3x (measured
    # at most 2.06x; single tensors of a random bf16 error spread more than their sum).
    assert_as_accurate(flat(grads), flat(ref_grads), flat(exact_grads), "all LoRA gradients", factor=2)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("family", FAMILIES)
def test_dropout_step_runs_through_the_kernel_and_trains(family, mode, checkpoints, monkeypatch):
    model = build(checkpoints(family), mode)
    patch(model)
    calls = []

    def spy(x, weight, lora_a, lora_b, scaling, bias=None, dropout_p=0.0):
        calls.append(dropout_p)
        return lora_linear(x, weight, lora_a, lora_b, scaling, bias=bias, dropout_p=dropout_p)

    lora_linear = lora_patch.lora_linear
    monkeypatch.setattr(lora_patch, "lora_linear", spy)
    batch = prompt_masked_batch()
    torch.manual_seed(0)
    loss, grads = step(model, batch, masked_loss=True)
    # q/k/v/o of both layers go through lora_linear, the MLP blocks through lora_mlp with the same dropout
    assert calls == [DROPOUT] * 8
    assert torch.isfinite(loss)
    for name, grad in grads.items():
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    dropout_off(model)
    calls.clear()
    no_dropout, _ = step(model, batch, masked_loss=True)
    assert calls == [0.0] * 8  # eval-mode dropout
    assert abs(loss - no_dropout) > 1e-4 * no_dropout, "dropout must change the loss, or no mask was applied"

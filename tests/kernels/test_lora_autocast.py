"""lora_linear and lora_mlp under CPU bf16 autocast with fp32 inputs and parameters (the state
prepare_model_for_kbit_training leaves), against PEFT's layers under the same autocast: dense and NF4 bases.
"""
import peft
import pytest
import torch
from torch.func import functional_call

from fastft.kernels import lora, triton_lora
from tests.kernels.test_lora import (
    BACKENDS,
    IN,
    LORA_KEYS,
    OUT,
    _inputs,
    _peft,
    assert_all_close,
    forward_backward,
    nf4_linear,
    peft_layer,
    triton_keep_mask,
)
from tests.kernels.test_lora_mlp import GRAD_NAMES, PROJS, peft_mlp
from tests.kernels.test_lora_mlp import LORA_KEYS as MLP_KEYS

BF16 = torch.bfloat16


def autocast():
    return torch.autocast("cpu", dtype=BF16)


class _SeededDropout(torch.nn.Module):
    """Stands in for PEFT's nn.Dropout with the mask fastft's kernels draw, so both sides drop the same entries."""

    def __init__(self, keep: torch.Tensor, p: float):
        super().__init__()
        self.keep, self.p = keep, p

    def forward(self, x):
        return x * self.keep.view(x.shape) / (1 - self.p)


def _keep_mask(backend: str, seed: int, p: float, shape):
    rows = shape[0] * shape[1]
    if backend == "triton_backend":
        return triton_keep_mask(seed, p, rows, shape[-1]).view(shape)
    return lora.torch_keep_mask(seed, p, (rows, shape[-1]), "cpu").view(shape)


def _ours_under_autocast(layer, weight, x, dy, dropout_p):
    """(our [y, dx, dA, dB, dbias] under autocast, the leaves they are taken from)."""
    bias = layer.base_layer.bias
    leaves = [x, *(layer.get_parameter(k) for k in LORA_KEYS)] + ([bias] if bias is not None else [])
    scaling = layer.scaling["default"]
    torch.manual_seed(5)
    with autocast():
        ours = forward_backward(lambda x, a, b, *bias: lora.lora_linear(x, weight, a, b, scaling, *bias, dropout_p),
                                leaves, dy)
    return ours, leaves


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
def test_dense_linear_matches_peft_under_autocast(backend, dropout_p, request):
    request.getfixturevalue(backend)
    layer = peft_layer(torch.nn.Linear(IN, OUT))
    x, dy = _inputs(torch.float32)
    dy = dy.to(BF16)  # the output's dtype under autocast, as F.linear returns it
    ours, leaves = _ours_under_autocast(layer, layer.base_layer.weight, x, dy, dropout_p)
    if dropout_p:
        torch.manual_seed(5)
        layer.lora_dropout["default"] = _SeededDropout(_keep_mask(backend, lora.draw_dropout_seed(), dropout_p, x.shape),
                                                       dropout_p)
    with autocast():
        ref = forward_backward(_peft(layer), leaves, dy)
    assert [t.dtype for t in ours] == [t.dtype for t in ref] == [BF16] + [torch.float32] * 4
    assert_all_close(ours, ref, BF16, ["y", "dx", "dA", "dB", "dbias"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_nf4_linear_matches_peft_qlora_under_autocast(backend, request):
    """bitsandbytes computes in bf16 and returns the input's fp32; PEFT's QLoRA layer adds the LoRA term to that."""
    request.getfixturevalue(backend)
    layer = peft_layer(nf4_linear(IN, OUT, bias=True, dtype=BF16))
    assert isinstance(layer, peft.tuners.lora.bnb.Linear4bit)
    x, dy = _inputs(torch.float32)
    ours, leaves = _ours_under_autocast(layer, layer.base_layer.weight, x, dy, 0.0)
    with autocast():
        ref = forward_backward(_peft(layer), leaves, dy)
    # bitsandbytes recasts its bias to the compute dtype in place, so its bias gradient is bf16; ours keeps fp32.
    assert [t.dtype for t in ours] == [t.dtype for t in ref[:4]] + [torch.float32] == [torch.float32] * 5
    assert_all_close(ours, ref, BF16, ["y", "dx", "dA", "dB", "dbias"])


def test_nf4_without_autocast_computes_in_the_weights_dtype(triton_backend, monkeypatch):
    """fp32 activations and a bf16-quantized weight: the kernels see bf16 operands, the caller gets fp32 back."""
    layer = peft_layer(nf4_linear(IN, OUT, bias=False, dtype=BF16))
    x, dy = _inputs(torch.float32)
    seen = []
    original = triton_lora.skinny
    monkeypatch.setattr(triton_lora, "skinny", lambda x, *a: seen.append(x.dtype) or original(x, *a))
    a, b = (layer.get_parameter(k) for k in LORA_KEYS)
    out = forward_backward(lambda x: lora.lora_linear(x, layer.base_layer.weight, a, b, layer.scaling["default"]),
                           [x], dy)
    ref = forward_backward(lambda x: functional_call(layer, {}, (x,)), [x], dy)
    assert seen == [BF16, BF16] and [t.dtype for t in out] == [torch.float32] * 2
    assert_all_close(out, ref, BF16, ["y", "dx"])


def _mlp_both(mlp, weights, x, dy, recompute=False):
    ab = [mlp.get_parameter(k) for k in MLP_KEYS]
    scalings = [getattr(mlp, p).scaling["default"] for p in PROJS]

    def ours(x, *ab):
        bundles = [(w, ab[2 * i], ab[2 * i + 1], s) for i, (w, s) in enumerate(zip(weights, scalings))]
        return lora.lora_mlp(x, *bundles, activation="swiglu", recompute=recompute)

    with autocast():
        out = forward_backward(ours, [x, *ab], dy)
        ref = forward_backward(lambda x, *ab: functional_call(mlp, dict(zip(MLP_KEYS, ab)), (x,)), [x, *ab], dy)
    return out, ref


@pytest.mark.parametrize("recompute", [False, True], ids=["keep", "recompute"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_dense_mlp_matches_peft_under_autocast(backend, recompute, request):
    request.getfixturevalue(backend)
    mlp = peft_mlp("swiglu")
    x = torch.randn(2, 7, mlp.gate_proj.in_features, generator=torch.Generator().manual_seed(3))
    dy = torch.randn(2, 7, mlp.down_proj.out_features, generator=torch.Generator().manual_seed(4)).to(BF16)
    out, ref = _mlp_both(mlp, [getattr(mlp, p).base_layer.weight for p in PROJS], x, dy, recompute)
    assert [t.dtype for t in out] == [t.dtype for t in ref] == [BF16] + [torch.float32] * 7
    assert_all_close(out, ref, BF16, GRAD_NAMES)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nf4_mlp_matches_peft_qlora_under_autocast(backend, request):
    request.getfixturevalue(backend)
    dense = peft_mlp("swiglu")
    holder = torch.nn.Module()
    for seed, proj in enumerate(PROJS):
        base = dense.get_submodule(proj).base_layer
        holder.add_module(proj, nf4_linear(base.in_features, base.out_features, bias=False, seed=seed, dtype=BF16))
    holder.is_loaded_in_4bit = True
    holder.forward = lambda x: holder.down_proj(torch.nn.functional.silu(holder.gate_proj(x)) * holder.up_proj(x))
    mlp = peft.get_peft_model(holder, peft.LoraConfig(r=5, lora_alpha=9, target_modules=list(PROJS))).base_model.model
    for name, param in mlp.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, generator=torch.Generator().manual_seed(len(name)))
    x = torch.randn(2, 7, mlp.gate_proj.in_features, generator=torch.Generator().manual_seed(3))
    dy = torch.randn(2, 7, mlp.down_proj.out_features, generator=torch.Generator().manual_seed(4))
    out, ref = _mlp_both(mlp, [getattr(mlp, p).base_layer.weight for p in PROJS], x, dy)
    assert [t.dtype for t in out] == [t.dtype for t in ref] == [torch.float32] * 8
    assert_all_close(out, ref, BF16, GRAD_NAMES)

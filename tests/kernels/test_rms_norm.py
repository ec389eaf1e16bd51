"""rms_norm (Triton under the interpreter, and the PyTorch path) against transformers' RMSNorm modules."""
import contextlib
import importlib

import pytest
import torch
from transformers.models.gemma.modeling_gemma import GemmaRMSNorm
from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm
from transformers.models.llama.modeling_llama import LlamaRMSNorm
from transformers.models.qwen3.modeling_qwen3 import Qwen3RMSNorm

from tests.kernels.numerics import assert_rel_close, poison_

# importlib: once fastft.kernels re-exports the function, the attribute `fastft.kernels.rms_norm` is the function
norm_mod = importlib.import_module("fastft.kernels.rms_norm")
triton_norm = importlib.import_module("fastft.kernels.triton_norm")
rms_norm = norm_mod.rms_norm

# (module class, offset that reproduces it, input shape); Qwen3's q/k norm runs over head_dim of [B, T, H, D]
CASES = [
    (LlamaRMSNorm, 0.0, (2, 37, 640)),
    (LlamaRMSNorm, 0.0, (3, 13, 1000)),
    (GemmaRMSNorm, 1.0, (2, 37, 640)),
    (GemmaRMSNorm, 1.0, (3, 13, 1000)),
    (Gemma3RMSNorm, 1.0, (2, 11, 4, 256)),
    (Qwen3RMSNorm, 0.0, (2, 11, 5, 128)),
    (Qwen3RMSNorm, 0.0, (1, 9, 3, 64)),
]
CASE_IDS = [f"{cls.__name__}-{'x'.join(map(str, shape))}" for cls, _, shape in CASES]


@contextlib.contextmanager
def poisoned_allocations():
    """Every float buffer torch.empty/empty_like hands out is NaN-filled, so an element a kernel never writes fails."""
    empty, empty_like = torch.empty, torch.empty_like

    def poisoned(alloc):
        def wrapper(*args, **kwargs):
            t = alloc(*args, **kwargs)
            return poison_(t) if t.is_floating_point() else t
        return wrapper

    torch.empty, torch.empty_like = poisoned(empty), poisoned(empty_like)
    try:
        yield
    finally:
        torch.empty, torch.empty_like = empty, empty_like


def record_calls(monkeypatch, targets):
    """Wrap each (owner, attribute, label) target so calling it appends label to the returned list."""
    calls = []

    def spy(real, label):
        def wrapper(*args, **kwargs):
            calls.append(label)
            return real(*args, **kwargs)
        return wrapper

    for owner, name, label in targets:
        monkeypatch.setattr(owner, name, spy(getattr(owner, name), label))
    return calls


def _inputs(shape, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen).mul_(3.0).to(dtype)
    weight = torch.randn(shape[-1], generator=gen).to(dtype)  # HF initialises ones/zeros: randomise
    dy = torch.randn(shape, generator=gen).to(dtype)
    return x, weight, dy


def _hf(cls, weight):
    """(fn(x, w), w) running transformers' module; w is the module's own weight, a copy of `weight`."""
    module = cls(weight.shape[0], eps=1e-6)
    module.weight.data = weight.clone()
    return lambda x, w: module(x), module.weight


def _forward_backward(fn, x, weight, dy, param=None):
    """y and gradients for x and weight; param is the tensor fn reads the weight from (an HF module's own)."""
    x = x.detach().clone().requires_grad_()
    param = weight.detach().clone().requires_grad_() if param is None else param
    y = fn(x, param)
    y.backward(dy.to(y.dtype))
    return y.detach(), x.grad, param.grad


def _ours(offset):
    return lambda x, w: rms_norm(x, w, eps=1e-6, offset=offset)


def _check(out, ref, dtype, name):
    for got, want, what in zip(out, ref, ("y", "dx", "dweight")):
        assert_rel_close(got, want, dtype, name=f"{name} {what}")


@pytest.mark.parametrize("cls, offset, shape", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("backend", ["triton_backend", "torch_backend"])
def test_fp32_matches_transformers(cls, offset, shape, backend, request):
    request.getfixturevalue(backend)
    x, weight, dy = _inputs(shape, torch.float32, seed=1)
    hf_fn, hf_param = _hf(cls, weight)
    ref = _forward_backward(hf_fn, x, weight, dy, param=hf_param)
    with poisoned_allocations():
        out = _forward_backward(_ours(offset), x, weight, dy)
    _check(out, ref, torch.float32, f"{cls.__name__} {backend}")


@pytest.mark.parametrize("cls, offset, shape", CASES, ids=CASE_IDS)
def test_triton_matches_torch_path(cls, offset, shape, monkeypatch):
    x, weight, dy = _inputs(shape, torch.float32, seed=2)
    monkeypatch.setenv("FASTFT_KERNEL_BACKEND", "torch")
    ref = _forward_backward(_ours(offset), x, weight, dy)
    monkeypatch.setenv("FASTFT_KERNEL_BACKEND", "triton")
    _check(_forward_backward(_ours(offset), x, weight, dy), ref, torch.float32, cls.__name__)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("cls, offset, shape", CASES[::2], ids=CASE_IDS[::2])
@pytest.mark.parametrize("backend", ["triton_backend", "torch_backend"])
def test_half_precision_against_fp32_reference(cls, offset, shape, dtype, backend, request):
    """Half inputs and weights; the reference is the HF module in fp32 on the same (rounded) values."""
    request.getfixturevalue(backend)
    x, weight, dy = _inputs(shape, dtype, seed=3)
    hf_fn, hf_param = _hf(cls, weight.float())
    ref = _forward_backward(hf_fn, x.float(), weight.float(), dy.float(), param=hf_param)
    with poisoned_allocations():
        out = _forward_backward(_ours(offset), x, weight, dy)
    assert [t.dtype for t in out] == [dtype] * 3
    _check(out, ref, dtype, f"{cls.__name__} {dtype} {backend}")
    # and the HF module run in the same half dtype agrees to the same tolerance
    hf_half_fn, hf_half_param = _hf(cls, weight)
    assert_rel_close(out[0], hf_half_fn(x, hf_half_param).detach(), dtype, name="vs HF in half precision")


@pytest.mark.parametrize("cls, offset", [(LlamaRMSNorm, 0.0), (GemmaRMSNorm, 1.0)])
@pytest.mark.parametrize("backend", ["triton_backend", "torch_backend"])
def test_fp32_weight_on_bf16_input_keeps_transformers_dtype(cls, offset, backend, request):
    """As after peft's prepare_model_for_kbit_training: Llama's output promotes to fp32, Gemma's stays bf16."""
    request.getfixturevalue(backend)
    x, weight, dy = _inputs((2, 7, 640), torch.bfloat16, seed=4)
    weight = weight.float()
    hf_fn, hf_param = _hf(cls, weight)
    ref = _forward_backward(hf_fn, x, weight, dy, param=hf_param)
    out = _forward_backward(_ours(offset), x, weight, dy)
    assert [t.dtype for t in out] == [t.dtype for t in ref]
    _check(out, ref, torch.bfloat16, cls.__name__)


@pytest.mark.parametrize("backend", ["triton_backend", "torch_backend"])
def test_many_rows_and_strided_input(backend, request):
    """2,100 rows: several row tiles per backward program (Triton) and several chunks (PyTorch); x is a transpose."""
    request.getfixturevalue(backend)
    x, weight, dy = _inputs((300, 7, 640), torch.float32, seed=5)
    x, dy = x.transpose(0, 1), dy.transpose(0, 1)
    hf_fn, hf_param = _hf(LlamaRMSNorm, weight)
    ref = _forward_backward(hf_fn, x, weight, dy, param=hf_param)
    with poisoned_allocations():
        out = _forward_backward(_ours(0.0), x, weight, dy)
    _check(out, ref, torch.float32, backend)


def test_weight_gradient_is_deterministic(triton_backend):
    x, weight, dy = _inputs((5, 123, 1000), torch.float32, seed=6)
    grads = [_forward_backward(_ours(1.0), x, weight, dy)[2] for _ in range(2)]
    assert torch.equal(grads[0], grads[1])


def test_cast_before_weight_overrides_the_offset_default():
    """Gemma's offset with Llama's casting order: normalised rows rounded to fp16 before the (1 + w) scaling."""
    x, weight, _ = _inputs((4, 9, 640), torch.float16, seed=7)
    h = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6)
    expected = (h.half().float() * (1.0 + weight.float())).half()
    out = rms_norm(x, weight, offset=1.0, cast_before_weight=True)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert not torch.equal(out, rms_norm(x, weight, offset=1.0))


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_dispatch_follows_env_var(backend, monkeypatch):
    calls = record_calls(monkeypatch, [(triton_norm, "rms_norm_forward", "triton"),
                                       (triton_norm, "rms_norm_backward", "triton"),
                                       (norm_mod, "torch_rms_norm_forward", "torch"),
                                       (norm_mod, "torch_rms_norm_backward", "torch")])
    monkeypatch.setenv("FASTFT_KERNEL_BACKEND", backend)
    x, weight, dy = _inputs((3, 640), torch.float32, seed=8)
    _forward_backward(_ours(0.0), x, weight, dy)
    assert calls == [backend, backend]


@pytest.mark.parametrize("backend, owner, name", [("triton", triton_norm, "rms_norm_backward"),
                                                  ("torch", norm_mod, "torch_rms_norm_backward")])
def test_frozen_weight_gets_no_gradient_work(backend, owner, name, monkeypatch):
    """LoRA freezes the norms: the backward must skip the weight's reduction over rows, and x's gradient is the
    same as with a trainable weight."""
    monkeypatch.setenv("FASTFT_KERNEL_BACKEND", backend)
    weight_grads = []
    real = getattr(owner, name)
    monkeypatch.setattr(owner, name, lambda *a: (lambda out: weight_grads.append(out[1]) or out)(real(*a)))
    x, weight, dy = _inputs((3, 9, 640), torch.float32, seed=9)
    trainable = _forward_backward(_ours(1.0), x, weight, dy)
    frozen = _forward_backward(_ours(1.0), x, weight, dy, param=weight.detach().clone())
    assert weight_grads[0] is not None and weight_grads[1] is None and frozen[2] is None
    assert torch.equal(frozen[0], trainable[0]) and torch.equal(frozen[1], trainable[1])

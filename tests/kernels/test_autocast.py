"""Every public function of cross-entropy, linear cross-entropy, RMSNorm, RoPE and the gated activations under
torch.autocast("cpu", dtype=torch.bfloat16) with fp32 inputs and parameters (the state peft's
prepare_model_for_kbit_training leaves a QLoRA model in, which the trainer then runs under bf16 autocast),
forward and backward, against the same computation without fastft under the same autocast.

The forward runs inside autocast and the backward after it, as the trainer does. The tolerance is the one of
the dtype the reference computes in there: bf16 where autocast recasts (the head's matmul), fp32 where it
leaves the computation alone (norms, rotations, activations, a loss on fp32 logits). Each case runs on the
PyTorch path and on the Triton path (interpreter); none of these kernels calls tl.dot, so the interpreter's bf16
tl.dot fault does not arise, but its fp32 -> bf16 stores truncate, which the bf16 tolerance covers.
"""
import pytest
import torch
import torch.nn.functional as F
from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm
from transformers.models.llama.modeling_llama import LlamaRMSNorm, apply_rotary_pos_emb

from fastft.kernels import apply_rope, cross_entropy, geglu, linear_cross_entropy, rms_norm, swiglu
from tests.kernels.numerics import assert_rel_close
from tests.kernels.test_cross_entropy import IGNORE, make_labels

BACKENDS = ["torch", "triton"]
AUTOCAST = torch.bfloat16


def _inputs(seed, *shapes, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(shape, generator=gen) * scale).requires_grad_() for shape in shapes]


def _under_autocast(fn, inputs, grad_seed=7):
    """fn(*inputs) under CPU bf16 autocast, then the gradients of <out, g> for a fixed random g, outside it."""
    inputs = [t.detach().clone().requires_grad_() for t in inputs]
    with torch.autocast("cpu", dtype=AUTOCAST):
        outs = fn(*inputs)
    outs = outs if isinstance(outs, tuple) else (outs,)
    gen = torch.Generator().manual_seed(grad_seed)
    grad_outputs = [torch.rand(o.shape, generator=gen).add_(0.5).to(o.dtype) for o in outs]
    return [o.detach() for o in outs] + list(torch.autograd.grad(outs, inputs, grad_outputs))


def _compare(monkeypatch, backend, ours, reference, inputs, compute_dtype):
    """ours and reference give the same outputs and gradients, with the same dtypes, within compute_dtype's
    tolerance; inputs are fp32, and so must every gradient be."""
    expected = _under_autocast(reference, inputs)
    monkeypatch.setenv("FASTFT_KERNEL_BACKEND", backend)
    got = _under_autocast(ours, inputs)
    assert [t.dtype for t in got] == [t.dtype for t in expected]
    assert all(g.dtype == torch.float32 for g in got[-len(inputs):])
    for i, (out, ref) in enumerate(zip(got, expected, strict=True)):
        assert_rel_close(out.float(), ref.float(), compute_dtype, name=f"{backend} output/grad {i}")


def _softcapped(logits, softcap):
    """Gemma 2's final-logit softcapping as transformers writes it (in the logits' dtype)."""
    return logits if softcap is None else torch.tanh(logits / softcap) * softcap


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("softcap, bias", [(None, True), (30.0, False)])
def test_linear_cross_entropy(monkeypatch, backend, reduction, softcap, bias):
    """The head's matmul runs in bf16 as F.linear's does under autocast; the loss reads those logits in fp32."""
    hidden, weight, b = _inputs(1, (37, 48), (301, 48), (301,), scale=0.5)
    labels = make_labels(37, 301, 0.3, torch.Generator().manual_seed(2))
    inputs = [hidden, weight, b] if bias else [hidden, weight]

    def reference(h, w, b=None):
        logits = _softcapped(F.linear(h, w, b), softcap)
        return F.cross_entropy(logits, labels, ignore_index=IGNORE, reduction=reduction)

    def ours(h, w, b=None):
        return linear_cross_entropy(h, w, labels, bias=b, reduction=reduction, softcap=softcap, chunk_size=8)

    _compare(monkeypatch, backend, ours, reference, inputs, AUTOCAST)


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_cross_entropy_backward_inside_autocast(monkeypatch, backend):
    """reduction="none" recomputes the chunks in backward; a backward run inside autocast must not recast them."""
    hidden, weight = _inputs(3, (21, 32), (97, 32), scale=0.5)
    labels = make_labels(21, 97, 0.2, torch.Generator().manual_seed(4))
    monkeypatch.setenv("FASTFT_KERNEL_BACKEND", backend)
    results = []
    for fn in (lambda h, w: F.cross_entropy(F.linear(h, w), labels, reduction="none"),
               lambda h, w: linear_cross_entropy(h, w, labels, reduction="none", chunk_size=5)):
        h, w = hidden.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
        with torch.autocast("cpu", dtype=AUTOCAST):
            loss = fn(h, w)
            loss.sum().backward()
        results.append([loss.detach(), h.grad, w.grad])
    for out, ref in zip(*reversed(results)):
        assert out.dtype == ref.dtype
        assert_rel_close(out, ref, AUTOCAST)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cross_entropy_on_fp32_logits(monkeypatch, backend):
    """Autocast runs F.cross_entropy in fp32: so does ours, to fp32 tolerance."""
    (logits,) = _inputs(5, (2, 11, 257), scale=3.0)
    labels = make_labels(22, 257, 0.3, torch.Generator().manual_seed(6)).view(2, 11)
    reference = lambda x: F.cross_entropy(x.transpose(1, 2), labels, ignore_index=IGNORE)  # noqa: E731
    _compare(monkeypatch, backend, lambda x: cross_entropy(x, labels), reference, [logits], torch.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cross_entropy_on_an_autocast_head(monkeypatch, backend):
    """Logits from a linear head under autocast are bf16; the loss and the gradient flowing back match F's."""
    hidden, weight = _inputs(7, (29, 40), (263, 40), scale=0.5)
    labels = make_labels(29, 263, 0.3, torch.Generator().manual_seed(8))
    ours = lambda h, w: cross_entropy(F.linear(h, w), labels, softcap=30.0)  # noqa: E731
    reference = lambda h, w: F.cross_entropy(_softcapped(F.linear(h, w), 30.0), labels)  # noqa: E731
    _compare(monkeypatch, backend, ours, reference, [hidden, weight], AUTOCAST)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("module, offset", [(LlamaRMSNorm, 0.0), (Gemma3RMSNorm, 1.0)])
def test_rms_norm(monkeypatch, backend, module, offset):
    x, weight = _inputs(9, (3, 7, 640), (640,))
    norm = module(640, eps=1e-6)

    def reference(x, w):  # the module's own forward, on the very weight tensor that is differentiated
        return torch.func.functional_call(norm, {"weight": w}, (x,))

    ours = lambda x, w: rms_norm(x, w, eps=1e-6, offset=offset)  # noqa: E731
    _compare(monkeypatch, backend, ours, reference, [x, weight], torch.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_apply_rope(monkeypatch, backend):
    q, k = _inputs(10, (2, 13, 4, 64), (2, 13, 2, 64))
    angles = torch.arange(13.0)[:, None] * torch.logspace(0, -3, 32)[None]
    cos, sin = (f(torch.cat((angles, angles), dim=-1))[None].expand(2, 13, 64) for f in (torch.cos, torch.sin))

    def rotate(fn):
        return lambda q, k: fn(q.transpose(1, 2), k.transpose(1, 2), cos, sin)

    _compare(monkeypatch, backend, rotate(apply_rope), rotate(apply_rotary_pos_emb), [q, k], torch.float32)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ours, reference", [
    (swiglu, lambda g, u: F.silu(g) * u),
    (geglu, lambda g, u: F.gelu(g, approximate="tanh") * u),
    (lambda g, u: geglu(g, u, approximate="none"), lambda g, u: F.gelu(g) * u),
], ids=["swiglu", "geglu_tanh", "geglu_erf"])
def test_gated_activations(monkeypatch, backend, ours, reference):
    gate, up = _inputs(11, (5, 1031), (5, 1031), scale=2.0)
    _compare(monkeypatch, backend, ours, reference, [gate, up], torch.float32)


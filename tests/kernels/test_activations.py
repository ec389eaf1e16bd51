"""swiglu / geglu (Triton under the interpreter, and the PyTorch path) against torch.nn.functional formulas."""
import pytest
import torch
import torch.nn.functional as F

from fastft.kernels import activations, triton_act
from fastft.kernels.activations import geglu, swiglu
from tests.kernels.numerics import assert_rel_close, poison_

BACKENDS = ["triton_backend", "torch_backend"]
CASES = {
    "swiglu": (swiglu, lambda g, u: F.silu(g) * u),
    "geglu_tanh": (geglu, lambda g, u: F.gelu(g, approximate="tanh") * u),
    "geglu_erf": (lambda g, u: geglu(g, u, approximate="none"), lambda g, u: F.gelu(g) * u),
}


def _inputs(dtype, seed=0):
    """Odd-sized, non-contiguous gate/up (3*5*411 elements: several 1024-blocks and a ragged tail)."""
    gen = torch.Generator().manual_seed(seed)
    gate = (3 * torch.randn(411, 5, 3, generator=gen)).permute(2, 1, 0).to(dtype)
    up = torch.randn(3, 5, 411, generator=gen).to(dtype)
    dh = torch.randn(3, 5, 411, generator=gen).to(dtype)
    return gate, up, dh


def _forward_backward(fn, gate, up, dh):
    gate, up = (t.detach().clone().requires_grad_() for t in (gate, up))
    h = fn(gate, up)
    return [h.detach(), *torch.autograd.grad(h, (gate, up), dh)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_torch_formula(backend, dtype, case, request):
    """Forward and both gradients; half precision against fp32 math on the same half-precision values."""
    request.getfixturevalue(backend)
    ours, formula = CASES[case]
    gate, up, dh = _inputs(dtype)
    out = _forward_backward(ours, gate, up, dh)
    ref = _forward_backward(formula, gate.float(), up.float(), dh.float())
    for o, r, name in zip(out, ref, ("h", "dgate", "dup")):
        assert o.dtype == dtype
        assert_rel_close(o, r, dtype, name=name)


@pytest.mark.parametrize("act", [triton_act.SILU, triton_act.GELU_TANH, triton_act.GELU_ERF])
def test_triton_matches_torch_path(act, monkeypatch):
    gate, up, dh = (t.contiguous() for t in _inputs(torch.float32))
    results = {}
    for backend in ("triton", "torch"):
        monkeypatch.setenv("FASTFT_KERNEL_BACKEND", backend)
        h = activations.gated_act_forward(gate, up, act)
        dg, du = activations.gated_act_backward(dh, gate, up, act, poison_(torch.empty_like(gate)),
                                                poison_(torch.empty_like(up)))
        results[backend] = (h, dg, du)
    for o, r, name in zip(results["triton"], results["torch"], ("h", "dgate", "dup")):
        assert_rel_close(o, r, name=name)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_backward_may_overwrite_its_inputs(backend, dtype, request):
    """lora_mlp writes d(gate), d(up) over buffers it no longer needs; aliasing must not change the result."""
    request.getfixturevalue(backend)
    gate, up, dh = (t.contiguous() for t in _inputs(dtype))
    expected = activations.gated_act_backward(dh, gate, up, triton_act.GELU_TANH)
    scratch = torch.empty_like(gate)
    dg, du = activations.gated_act_backward(dh, gate, up, triton_act.GELU_TANH, dg=scratch, du=dh)
    assert dg is scratch and du is dh
    assert torch.equal(dg, expected[0]) and torch.equal(du, expected[1])


def test_dispatch(monkeypatch):
    calls = []
    for name in ("gated_forward", "gated_backward"):
        original = getattr(triton_act, name)
        monkeypatch.setattr(triton_act, name, lambda *args, _f=original, _n=name: calls.append(_n) or _f(*args))
    gate, up, dh = _inputs(torch.float32)
    for backend, expected in (("triton", ["gated_forward", "gated_backward"]), ("torch", [])):
        monkeypatch.setenv("FASTFT_KERNEL_BACKEND", backend)
        calls.clear()
        out = _forward_backward(swiglu, gate, up, dh)
        assert calls == expected
        assert_rel_close(out[0], F.silu(gate) * up, name=f"{backend} h")


def test_rejects_mismatched_inputs_and_unknown_approximation():
    with pytest.raises(ValueError, match="shape and dtype"):
        swiglu(torch.randn(3, 4), torch.randn(3, 5))
    with pytest.raises(ValueError, match="approximate"):
        geglu(torch.randn(3, 4), torch.randn(3, 4), approximate="sigmoid")

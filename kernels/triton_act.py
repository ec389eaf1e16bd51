"""Triton kernels for gated activations h = act(gate) * up, flattened to 1-D.

The backward recomputes act(gate) from the saved gate instead of reading a stored activation, and may
write its two gradients over its inputs (the fused MLP backward reuses buffers that way).
"""
import torch
import triton
import triton.language as tl

from ._backend import interpreting
from ._device import device_guard

# Activation codes shared with activations.py (a constexpr picks the branch at compile time).
SILU, GELU_TANH, GELU_ERF = 0, 1, 2

_BLOCK = 1024
_SQRT_2_OVER_PI = tl.constexpr(0.7978845608028654)
_GELU_CUBIC = tl.constexpr(0.044715)
_INV_SQRT_2 = tl.constexpr(0.7071067811865476)
_INV_SQRT_2PI = tl.constexpr(0.3989422804014327)


@triton.jit
def _act_and_grad(x, ACT: tl.constexpr):
    """act(x) and act'(x) in fp32, from one pass over the exponentials."""
    if ACT == 0:
        sig = tl.sigmoid(x)
        return x * sig, sig * (1.0 + x * (1.0 - sig))
    elif ACT == 1:
        # 0.5 * (1 + tanh(z)) == sigmoid(2z): one exp instead of a tanh, no cancellation near 0.
        inner = _SQRT_2_OVER_PI * (x + _GELU_CUBIC * x * x * x)
        sig = tl.sigmoid(2.0 * inner)
        d_inner = _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_CUBIC * x * x)
        return x * sig, sig + x * sig * (1.0 - sig) * 2.0 * d_inner
    else:
        cdf = 0.5 * (1.0 + tl.math.erf(x * _INV_SQRT_2))
        return x * cdf, cdf + x * _INV_SQRT_2PI * tl.exp(-0.5 * x * x)


@triton.jit
def _gated_fwd_kernel(g_ptr, u_ptr, h_ptr, n, ACT: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(u_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    a, _ = _act_and_grad(g, ACT)
    tl.store(h_ptr + offs, (a * u).to(h_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _gated_bwd_kernel(dh_ptr, g_ptr, u_ptr, dg_ptr, du_ptr, n, ACT: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    dh = tl.load(dh_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(u_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    a, da = _act_and_grad(g, ACT)
    # Every element is loaded before either store, so dg/du may alias dh, g or u.
    tl.store(dg_ptr + offs, (dh * u * da).to(dg_ptr.dtype.element_ty), mask=mask)
    tl.store(du_ptr + offs, (dh * a).to(du_ptr.dtype.element_ty), mask=mask)


def kernel_out_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a kernel should store results in.

    The interpreter casts fp32 to bf16 by truncation (GPUs round to nearest even), which biases every bf16
    result toward zero; under it, bf16 results are stored in fp32 and rounded by torch instead.
    """
    return torch.float32 if interpreting() and dtype == torch.bfloat16 else dtype


def gated_forward(gate: torch.Tensor, up: torch.Tensor, act: int) -> torch.Tensor:
    """act(gate) * up for contiguous tensors of one shape and dtype."""
    h = torch.empty_like(gate, dtype=kernel_out_dtype(gate.dtype))
    n = gate.numel()
    with device_guard(gate):
        _gated_fwd_kernel[(triton.cdiv(n, _BLOCK),)](gate, up, h, n, ACT=act, BLOCK=_BLOCK)
    return h.to(gate.dtype)


def gated_backward(dh, gate, up, act: int, dg: torch.Tensor, du: torch.Tensor):
    """Writes d(gate) into dg and d(up) into du (contiguous; they may be dh, gate or up themselves)."""
    n = gate.numel()
    outs = [t if kernel_out_dtype(t.dtype) == t.dtype else torch.empty_like(t, dtype=torch.float32) for t in (dg, du)]
    with device_guard(gate):
        _gated_bwd_kernel[(triton.cdiv(n, _BLOCK),)](dh, gate, up, *outs, n, ACT=act, BLOCK=_BLOCK)
    for target, out in zip((dg, du), outs):
        if out is not target:
            target.copy_(out)
    return dg, du

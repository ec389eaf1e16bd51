"""Gated activations for LLaMA-style MLPs: swiglu = silu(gate) * up, geglu = gelu(gate) * up.

Forward stores nothing but its inputs; backward recomputes the activation (one elementwise pass) instead
of keeping act(gate) alive. Math runs in fp32 and the result is returned in the input dtype.
"""
import math

import torch
import torch.nn.functional as F

from . import triton_act
from ._backend import use_triton
from .triton_act import GELU_ERF, GELU_TANH, SILU

_GELU_APPROX = {"tanh": GELU_TANH, "none": GELU_ERF}
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_CUBIC = 0.044715
_INV_SQRT_2 = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _torch_act(x: torch.Tensor, act: int) -> torch.Tensor:
    if act == SILU:
        return F.silu(x)
    return F.gelu(x, approximate="tanh" if act == GELU_TANH else "none")


def _torch_act_grad(x: torch.Tensor, act: int) -> torch.Tensor:
    """act'(x), the same closed forms the Triton kernel uses."""
    if act == SILU:
        sig = torch.sigmoid(x)
        return sig * (1.0 + x * (1.0 - sig))
    if act == GELU_TANH:
        sig = torch.sigmoid(2.0 * _SQRT_2_OVER_PI * (x + _GELU_CUBIC * x.pow(3)))
        return sig + x * sig * (1.0 - sig) * 2.0 * _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_CUBIC * x * x)
    cdf = 0.5 * (1.0 + torch.erf(x * _INV_SQRT_2))
    return cdf + x * _INV_SQRT_2PI * torch.exp(-0.5 * x * x)


def gated_act_forward(gate: torch.Tensor, up: torch.Tensor, act: int) -> torch.Tensor:
    """act(gate) * up for contiguous same-shape tensors (no autograd)."""
    if use_triton(gate, up):
        return triton_act.gated_forward(gate, up, act)
    return (_torch_act(gate.float(), act) * up.float()).to(gate.dtype)


def gated_act_backward(dh, gate, up, act: int, dg=None, du=None):
    """Gradients of act(gate) * up; written into dg / du when given (they may alias dh, gate or up)."""
    dg = torch.empty_like(gate) if dg is None else dg
    du = torch.empty_like(up) if du is None else du
    if use_triton(dh, gate, up):
        return triton_act.gated_backward(dh, gate, up, act, dg, du)
    g32, dh32 = gate.float(), dh.float()
    grad_gate = dh32 * up.float() * _torch_act_grad(g32, act)
    grad_up = dh32 * _torch_act(g32, act)
    dg.copy_(grad_gate)
    du.copy_(grad_up)
    return dg, du


class _GatedAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate, up, act):
        if gate.shape != up.shape or gate.dtype != up.dtype:
            raise ValueError(
                f"gate and up must share shape and dtype, got {tuple(gate.shape)} {gate.dtype} "
                f"and {tuple(up.shape)} {up.dtype}"
            )
        gate, up = gate.contiguous(), up.contiguous()
        ctx.act = act
        ctx.save_for_backward(gate, up)
        return gated_act_forward(gate, up, act)

    @staticmethod
    def backward(ctx, dh):
        gate, up = ctx.saved_tensors
        dg, du = gated_act_backward(dh.contiguous(), gate, up, ctx.act)
        return dg, du, None


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up (LLaMA, Mistral, Qwen MLPs)."""
    return _GatedAct.apply(gate, up, SILU)


def geglu(gate: torch.Tensor, up: torch.Tensor, approximate: str = "tanh") -> torch.Tensor:
    """gelu(gate, approximate=approximate) * up; "tanh" is Gemma's gelu_pytorch_tanh."""
    if approximate not in _GELU_APPROX:
        raise ValueError(f"approximate must be 'tanh' or 'none', got {approximate!r}")
    return _GatedAct.apply(gate, up, _GELU_APPROX[approximate])

"""Gated activations for LLaMA-style MLPs: swiglu = silu(gate) * up, geglu = gelu(gate) * up.

Forward stores nothing but its inputs; backward recomputes the activation (one elementwise pass) instead
of keeping act(gate) alive. Math runs in fp32 and the result is returned in the input dtype.
"""
import math

import torch

from . import triton_act
from ._backend import use_triton
from .triton_act import GELU_ERF, GELU_TANH, SILU

_GELU_APPROX = {"tanh": GELU_TANH, "none": GELU_ERF}
# gelu's tanh form 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3), is x * sigmoid(2u) = x * sigmoid(x (c1 + c3 x^2))
_GELU_TANH_C1 = 2 * math.sqrt(2 / math.pi)
_GELU_TANH_C3 = _GELU_TANH_C1 * 0.044715


def _gelu_tanh_cpu(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """gelu(x, approximate="tanh") through the sigmoid: aten's CPU kernel evaluates tanh slowly (AVX2, [2048, 2048]
    fp32: 14.6 ms, against 6 ms for these four passes); the same function, within fp32 rounding."""
    inner = torch.addcmul(torch.tensor(_GELU_TANH_C1, dtype=x.dtype), x, x, value=_GELU_TANH_C3, out=out)
    return inner.mul_(x).sigmoid_().mul_(x)


def _torch_act(x: torch.Tensor, act: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """act(x), into `out` when given (x's shape and dtype, not x itself)."""
    out = torch.empty_like(x) if out is None else out
    if act == SILU:
        return torch.ops.aten.silu.out(x, out=out)
    if act == GELU_TANH and x.device.type == "cpu":
        return _gelu_tanh_cpu(x, out)
    return torch.ops.aten.gelu.out(x, approximate="tanh" if act == GELU_TANH else "none", out=out)


def _torch_act_backward(grad: torch.Tensor, x: torch.Tensor, act: int) -> torch.Tensor:
    """grad * act'(x), written over grad: aten's one-pass kernels (the closed forms the Triton kernel uses),
    where an expression of torch ops would make ~14 passes over [tokens, intermediate] on the CPU."""
    if act == SILU:
        return torch.ops.aten.silu_backward.grad_input(grad, x, grad_input=grad)
    approximate = "tanh" if act == GELU_TANH else "none"
    return torch.ops.aten.gelu_backward.grad_input(grad, x, approximate=approximate, grad_input=grad)


def gated_act_forward(gate: torch.Tensor, up: torch.Tensor, act: int) -> torch.Tensor:
    """act(gate) * up for contiguous same-shape tensors (no autograd)."""
    return gated_act_forward_keeping_act(gate, up, act)[0]


def gated_act_forward_keeping_act(gate: torch.Tensor, up: torch.Tensor, act: int, into=(None, None)):
    """(act(gate) * up, act(gate) in fp32 or None): the PyTorch path hands back the activation it computed, for a
    gated_act_backward right after (lora_mlp's backward) to use instead of computing it again; Triton's does not.
    into: fp32 tensors of gate's shape the PyTorch path writes act(gate) and the product into (lora_mlp's
    workspace), or None for new ones; an fp32 product is returned in its tensor."""
    if use_triton(gate, up):
        return triton_act.gated_forward(gate, up, act), None
    activated = _torch_act(gate.float(), act, out=into[0])
    return torch.mul(activated, up.float(), out=into[1]).to(gate.dtype), activated


def gated_act_backward(dh, gate, up, act: int, dg=None, du=None, activated=None):
    """Gradients of act(gate) * up; written into dg / du when given (they may alias dh, gate or up).
    activated: act(gate) in fp32 from gated_act_forward_keeping_act, if the caller has it."""
    dg = torch.empty_like(gate) if dg is None else dg
    du = torch.empty_like(up) if du is None else du
    if use_triton(dh, gate, up):
        return triton_act.gated_backward(dh, gate, up, act, dg, du)
    g32, dh32 = gate.float(), dh.float()
    if activated is None:
        activated = _torch_act(g32, act)
    # d(gate) is read from dh, gate and up, d(up) from dh: an fp32 dg that aliases none of them takes d(gate) first,
    # else it goes through a temporary and every read comes before the first write into dg or du
    direct = dg.dtype == torch.float32 and all(dg.data_ptr() != t.data_ptr() for t in (dh, gate, up))
    grad_gate = _torch_act_backward(torch.mul(dh32, up.float(), out=dg if direct else None), g32, act)
    torch.mul(dh32, activated, out=du)
    if not direct:
        dg.copy_(grad_gate)
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

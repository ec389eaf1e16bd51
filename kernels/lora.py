"""LoRA linear layers and the LoRA MLP block, with hand-written backward passes.

lora_linear(x, W, A, B, s, bias, p) = x @ W.T + bias + s * (drop_p(x) @ A.T) @ B.T   (PEFT's lora.Linear)
The base weight W is frozen (no gradient) and may be a bitsandbytes 4-bit parameter: it is dequantized
in forward and again in backward, never kept alive in between. Saved for backward: x, xa = drop(x) @ A.T
([tokens, r]) and an integer dropout seed -- not the output, not the mask.

Dropout regenerates its mask from an integer seed wherever it is needed (the Triton kernels hash
(seed, element index); the PyTorch path seeds torch's generator). The seed comes from torch's default
generator, so torch.manual_seed makes runs repeat.
"""
import torch

from . import triton_lora
from ._backend import use_triton
from .activations import gated_act_backward, gated_act_forward
from .triton_act import GELU_TANH, SILU

_MLP_ACTIVATIONS = {"swiglu": SILU, "geglu": GELU_TANH}


def draw_dropout_seed() -> int:
    """A seed from torch's default CPU generator: reproducible under torch.manual_seed, no GPU sync."""
    return int(torch.randint(0, 2**31 - 1, ()).item())


def torch_keep_mask(seed: int, p: float, shape, device) -> torch.Tensor:
    """The PyTorch path's dropout keep-mask, regenerated from the seed in backward.

    torch's own generator, not the Triton kernels' index hash: on CPU the hash costs ~45 integer ops per
    element and made a dropout step twice as slow as PEFT's nn.Dropout. The two backends therefore draw
    different (equally valid) masks for the same seed; each is deterministic given torch.manual_seed.
    """
    generator = torch.Generator(device=device).manual_seed(seed)
    return torch.rand(shape, generator=generator, device=device) >= p


def _torch_lora_forward(x, weight, lora_a, lora_b, scaling: float, bias, dropout_p: float, seed: int):
    """PyTorch twin of triton_lora.lora_forward: (y, xa) for 2-D contiguous x, dense weight in x.dtype."""
    y = x @ weight.T if bias is None else torch.addmm(bias.to(x.dtype), x, weight.T)
    dropped = x * torch_keep_mask(seed, dropout_p, x.shape, x.device) if dropout_p else x
    xa = dropped @ lora_a.to(x.dtype).T
    if dropout_p:
        xa.mul_(1.0 / (1.0 - dropout_p))
    return y.addmm_(xa, lora_b.to(x.dtype).T, alpha=scaling), xa


def _torch_lora_backward(dy, x, xa, weight, lora_a, lora_b, scaling: float, dropout_p: float, seed: int, need_dx: bool):
    """PyTorch twin of triton_lora.lora_backward: (dx or None, dA, dB)."""
    keep_scale = 1.0 / (1.0 - dropout_p)
    a = lora_a.to(dy.dtype)
    dxa = (dy @ lora_b.to(dy.dtype)).mul_(scaling)
    dx = dy @ weight if need_dx else None
    keep = torch_keep_mask(seed, dropout_p, x.shape, x.device) if dropout_p else None
    d_a = (dxa.T @ (x if keep is None else x * keep)).float()
    if dx is not None:
        low = dxa @ a
        dx.add_(low if keep is None else low.mul_(keep), alpha=keep_scale)
    d_b = (dy.T @ xa).float().mul_(scaling)
    return dx, d_a.mul_(keep_scale).to(lora_a.dtype), d_b.to(lora_b.dtype)


def _lora_impl(*tensors):
    """(forward, backward) pair of one backend, chosen once per forward so backward matches it."""
    if use_triton(*tensors):
        return triton_lora.lora_forward, triton_lora.lora_backward
    return _torch_lora_forward, _torch_lora_backward


def _dense_weight(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The frozen weight as a dense [out, in] tensor in dtype; a bitsandbytes 4-bit one is dequantized afresh."""
    quant_state = getattr(weight, "quant_state", None)
    if quant_state is None:
        return weight.to(dtype)
    import bitsandbytes.functional as bnb_functional

    return bnb_functional.dequantize_4bit(weight.data, quant_state).to(dtype)


def _check_frozen(weight: torch.Tensor):
    if weight.requires_grad and torch.is_grad_enabled():
        raise ValueError("the LoRA base weight must be frozen (requires_grad=False): these kernels give it no gradient")


class _LoRALinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, lora_a, lora_b, scaling, bias, dropout_p):
        x2 = x.reshape(-1, x.shape[-1]).contiguous()
        seed = draw_dropout_seed() if dropout_p > 0 else 0
        forward, ctx.backward_impl = _lora_impl(x2, lora_a)
        y, xa = forward(x2, _dense_weight(weight, x.dtype), lora_a, lora_b, scaling, bias, dropout_p, seed)
        ctx.save_for_backward(x2, xa, weight, lora_a, lora_b)
        ctx.hyper = (scaling, dropout_p, seed)
        ctx.x_shape, ctx.bias_dtype = x.shape, None if bias is None else bias.dtype
        return y.view(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, dy):
        x2, xa, weight, lora_a, lora_b = ctx.saved_tensors
        scaling, dropout_p, seed = ctx.hyper
        dy2 = dy.reshape(-1, dy.shape[-1]).contiguous()
        dx, d_a, d_b = ctx.backward_impl(
            dy2, x2, xa, _dense_weight(weight, dy2.dtype), lora_a, lora_b, scaling, dropout_p, seed,
            ctx.needs_input_grad[0],
        )
        d_bias = dy2.sum(0, dtype=torch.float32).to(ctx.bias_dtype) if ctx.needs_input_grad[5] else None
        return None if dx is None else dx.view(ctx.x_shape), None, d_a, d_b, None, d_bias, None


def lora_linear(x, weight, lora_a, lora_b, scaling, bias=None, dropout_p=0.0):
    """x @ weight.T + bias + scaling * (dropout(x) @ lora_a.T) @ lora_b.T, differentiable in x, lora_a, lora_b, bias.

    x[..., in]; weight[out, in] (frozen, dense or bitsandbytes Params4bit); lora_a[r, in]; lora_b[out, r].
    Computes in x.dtype. dropout_p applies to the LoRA branch only (pass 0 in eval mode).
    """
    _check_frozen(weight)
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    return _LoRALinear.apply(x, weight, lora_a, lora_b, float(scaling), bias, float(dropout_p))


class _LoRAMLP(torch.autograd.Function):
    """down(act(gate(x)) * up(x)); keeps x, gate(x), up(x) and three [tokens, r] tensors, recomputes the product."""

    @staticmethod
    def forward(ctx, x, act, gate_w, gate_a, gate_b, gate_s, up_w, up_a, up_b, up_s, down_w, down_a, down_b, down_s):
        x2 = x.reshape(-1, x.shape[-1]).contiguous()
        forward, ctx.backward_impl = _lora_impl(x2, gate_a)

        def project(inp, weight, lora_a, lora_b, scaling):
            return forward(inp, _dense_weight(weight, x.dtype), lora_a, lora_b, scaling, None, 0.0, 0)

        gate, xa_gate = project(x2, gate_w, gate_a, gate_b, gate_s)
        up, xa_up = project(x2, up_w, up_a, up_b, up_s)
        y, xa_down = project(gated_act_forward(gate, up, act), down_w, down_a, down_b, down_s)
        ctx.save_for_backward(
            x2, gate, up, xa_gate, xa_up, xa_down, gate_w, gate_a, gate_b, up_w, up_a, up_b, down_w, down_a, down_b
        )
        ctx.act, ctx.scalings, ctx.x_shape = act, (gate_s, up_s, down_s), x.shape
        return y.view(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, dy):
        x2, gate, up, xa_gate, xa_up, xa_down, gate_w, gate_a, gate_b, up_w, up_a, up_b, down_w, down_a, down_b = (
            ctx.saved_tensors
        )
        gate_s, up_s, down_s = ctx.scalings

        def project_back(grad, inp, xa, weight, lora_a, lora_b, scaling, need_dx):
            return ctx.backward_impl(
                grad, inp, xa, _dense_weight(weight, grad.dtype), lora_a, lora_b, scaling, 0.0, 0, need_dx
            )

        hidden = gated_act_forward(gate, up, ctx.act)
        dh, d_down_a, d_down_b = project_back(
            dy.reshape(-1, dy.shape[-1]).contiguous(), hidden, xa_down, down_w, down_a, down_b, down_s, True
        )
        # hidden and dh are dead once read: the activation backward writes d(gate), d(up) over them.
        d_gate, d_up = gated_act_backward(dh, gate, up, ctx.act, dg=hidden, du=dh)
        need_dx = ctx.needs_input_grad[0]
        dx, d_gate_a, d_gate_b = project_back(d_gate, x2, xa_gate, gate_w, gate_a, gate_b, gate_s, need_dx)
        dx_up, d_up_a, d_up_b = project_back(d_up, x2, xa_up, up_w, up_a, up_b, up_s, need_dx)
        if dx is not None:
            dx = dx.add_(dx_up).view(ctx.x_shape)
        return (dx, None, None, d_gate_a, d_gate_b, None, None, d_up_a, d_up_b, None, None, d_down_a, d_down_b, None)


def lora_mlp(x, gate, up, down, activation="swiglu"):
    """down_proj(act(gate_proj(x)) * up_proj(x)), each projection a LoRA linear without bias or dropout.

    gate, up, down: (weight, lora_a, lora_b, scaling) bundles as for lora_linear.
    activation: "swiglu" (silu; LLaMA, Mistral, Qwen) or "geglu" (tanh-approximated gelu; Gemma).
    """
    if activation not in _MLP_ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_MLP_ACTIVATIONS)}, got {activation!r}")
    flat = []
    for weight, lora_a, lora_b, scaling in (gate, up, down):
        _check_frozen(weight)
        flat += [weight, lora_a, lora_b, float(scaling)]
    return _LoRAMLP.apply(x, _MLP_ACTIVATIONS[activation], *flat)

"""LoRA linear layers and the LoRA MLP block, with hand-written backward passes.

lora_linear(x, W, A, B, s, bias, p) = x @ W.T + bias + s * (drop_p(x) @ A.T) @ B.T   (PEFT's lora.Linear)
The base weight W is frozen (no gradient) and may be a bitsandbytes 4-bit parameter: it is dequantized
in forward and again in backward, never kept alive in between. Saved for backward: x, xa = drop(x) @ A.T
([tokens, r]) and an integer dropout seed -- not the output, not the mask. When x is an rms_norm output, what the
norm keeps (its input and weight) is saved instead of x and x is rebuilt in backward (rms_norm.norm_recipe).

Precision follows PEFT + bitsandbytes: everything computes in the active autocast dtype of x's device type, else
in a 4-bit weight's dtype (bitsandbytes computes in it, whatever the activations are), else in x.dtype. The result
has the dtype PEFT's layer returns: the compute dtype for a dense weight (F.linear under autocast), x.dtype for a
4-bit one (bitsandbytes casts back to its input's dtype). Gradients take their inputs' dtypes.

The base products go to torch (cuBLAS); the low-rank path goes to a backend -- the Triton kernels of triton_lora
or their PyTorch twins here -- as three operations: skinny (scale * drop(x) @ p), lowrank_add_
(out += scale * drop(l @ u), used only with dropout) and tn (scale * u.T @ drop(v), accumulated in fp32).

Dropout regenerates its mask from an integer seed wherever it is needed (the Triton kernels hash
(seed, element index); the PyTorch path seeds torch's generator). The seed comes from torch's default
generator, so torch.manual_seed makes runs repeat.
"""
from collections import namedtuple

import torch

from . import triton_lora
from ._backend import use_triton
from .activations import gated_act_backward, gated_act_forward_keeping_act
from .rms_norm import norm_recipe, rebuild
from .triton_act import GELU_TANH, SILU
from .workspace import workspace

_MLP_ACTIVATIONS = {"swiglu": SILU, "geglu": GELU_TANH}
LowRankOps = namedtuple("LowRankOps", "skinny lowrank_add_ tn")


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


def _torch_skinny(x, p, scale: float, dropout_p: float = 0.0, seed: int = 0) -> torch.Tensor:
    """PyTorch twin of triton_lora.skinny."""
    if dropout_p:
        x = x * torch_keep_mask(seed, dropout_p, x.shape, x.device)
    return (x @ p).mul_(scale)


def _torch_lowrank_add_(out, low_l, low_u, scale: float, dropout_p: float = 0.0, seed: int = 0) -> torch.Tensor:
    """PyTorch twin of triton_lora.lowrank_add_."""
    low = low_l @ low_u
    if dropout_p:
        low.mul_(torch_keep_mask(seed, dropout_p, out.shape, out.device))
    return out.add_(low, alpha=scale)


def _torch_tn(u, v, scale: float, out_dtype, dropout_p: float = 0.0, seed: int = 0) -> torch.Tensor:
    """PyTorch twin of triton_lora.tn_matmul."""
    if dropout_p:
        v = v * torch_keep_mask(seed, dropout_p, v.shape, v.device)
    return (u.T @ v).float().mul_(scale).to(out_dtype)


def _low_rank_ops(*tensors) -> LowRankOps:
    """The backend of the low-rank path, chosen once per forward so backward matches it."""
    if use_triton(*tensors):
        return LowRankOps(triton_lora.skinny, triton_lora.lowrank_add_, triton_lora.tn_matmul)
    return LowRankOps(_torch_skinny, _torch_lowrank_add_, _torch_tn)


def _lora_forward(ops, x, weight, lora_a, lora_b, scaling: float, bias, dropout_p: float, seed: int):
    """(y, xa) for 2-D contiguous x, with the dense weight, adapters and bias already in x.dtype."""
    xa = ops.skinny(x, lora_a.T, 1.0 / (1.0 - dropout_p), dropout_p, seed)
    return _lora_output(x, weight, xa, lora_b, scaling, bias), xa


def _lora_output(x, weight, xa, lora_b, scaling: float, bias=None, out=None):
    """x @ weight.T + bias + scaling * xa @ lora_b.T, given xa, into `out` if given: the same ops in forward and in a
    recompute, so a recomputed output equals the forward's bit for bit."""
    y = torch.mm(x, weight.T, out=out) if bias is None else torch.addmm(bias, x, weight.T, out=out)
    return y.addmm_(xa, lora_b.T, alpha=scaling)


def _lora_backward(ops, dy, x, xa, weight, lora_a, lora_b, scaling: float, dropout_p: float, seed: int,
                   need_dx: bool, grad_dtypes, dx_into=None):
    """(dx or None, dA, dB) for 2-D contiguous dy, all operands in dy.dtype; dA, dB in grad_dtypes; dx written into
    dx_into when given."""
    keep_scale = 1.0 / (1.0 - dropout_p)
    dxa = ops.skinny(dy, lora_b, scaling)
    dx = None
    if need_dx:
        dx = _times_weight(dy, weight, dx_into)
        if dropout_p:  # the mask on the low-rank term is what cuBLAS cannot fuse
            ops.lowrank_add_(dx, dxa, lora_a, keep_scale, dropout_p, seed)
        else:
            dx.addmm_(dxa, lora_a)
    d_a = ops.tn(dxa, x, keep_scale, grad_dtypes[0], dropout_p, seed)
    d_b = ops.tn(dy, xa, scaling, grad_dtypes[1])
    return dx, d_a, d_b


def _times_weight(dy: torch.Tensor, weight: torch.Tensor, out=None) -> torch.Tensor:
    """dy @ weight for weight[out, in]. On the CPU a bf16/fp16 matmul whose right operand is row-major ran ~17x
    slower than with a transposed one (256x2048 @ 2048x1024: 9.5 s against 0.57 s with torch 2.13), so the CPU
    gets a transposed copy; cuBLAS takes either layout at full speed."""
    if dy.is_cuda or dy.dtype == torch.float32:
        return torch.mm(dy, weight, out=out)
    return torch.mm(dy, weight.T.contiguous().T, out=out)


def _dtypes(x: torch.Tensor, weight: torch.Tensor) -> tuple[torch.dtype, torch.dtype]:
    """(compute dtype, result dtype) as PEFT's LoRA layer over this weight would have them (see the module doc)."""
    quant_state = getattr(weight, "quant_state", None)
    if torch.is_autocast_enabled(x.device.type):
        compute = torch.get_autocast_dtype(x.device.type)
    else:
        compute = x.dtype if quant_state is None else quant_state.dtype
    return compute, compute if quant_state is None else x.dtype


def _dense_weight(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The frozen weight as a dense [out, in] tensor in dtype; a bitsandbytes 4-bit one is dequantized afresh."""
    quant_state = getattr(weight, "quant_state", None)
    if quant_state is None:
        return weight.to(dtype)
    import bitsandbytes.functional as bnb_functional

    return bnb_functional.dequantize_4bit(weight.data, quant_state).to(dtype)


def _operands(weight, lora_a, lora_b, dtype):
    """The dense base weight and both adapters in the compute dtype (the adapters are small: a cast costs little)."""
    return _dense_weight(weight, dtype), lora_a.to(dtype), lora_b.to(dtype)


def _flat(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """t as a contiguous [rows, features] matrix in dtype."""
    return t.reshape(-1, t.shape[-1]).to(dtype).contiguous()


def _input_to_save(x: torch.Tensor, x2: torch.Tensor):
    """(tensors to save for the flattened input x2, params to rebuild it or None): an rms_norm output is saved as
    the norm's input and weight, which the norm keeps anyway, instead of a [tokens, features] tensor of its own."""
    recipe = norm_recipe(x)
    return ((x2,), None) if recipe is None else recipe


def _saved_input(saved: tuple, params) -> torch.Tensor:
    """The flattened input in backward, from what _input_to_save kept: as it was, or rebuilt bit for bit."""
    return saved[0] if params is None else rebuild(saved, params)


def _check_frozen(weight: torch.Tensor):
    if weight.requires_grad and torch.is_grad_enabled():
        raise ValueError("the LoRA base weight must be frozen (requires_grad=False): these kernels give it no gradient")


class _LoRALinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, lora_a, lora_b, scaling, bias, dropout_p):
        compute, result = _dtypes(x, weight)
        seed = draw_dropout_seed() if dropout_p > 0 else 0
        x2 = x.reshape(-1, x.shape[-1]).contiguous()
        ctx.ops = _low_rank_ops(x2, lora_a)
        with torch.autocast(x.device.type, enabled=False):  # dtypes are explicit from here on
            y, xa = _lora_forward(
                ctx.ops, x2.to(compute), *_operands(weight, lora_a, lora_b, compute), scaling,
                None if bias is None else bias.to(compute), dropout_p, seed,
            )
        kept, ctx.input_params = _input_to_save(x, x2)
        ctx.save_for_backward(xa, weight, lora_a, lora_b, *kept)
        ctx.hyper = (scaling, dropout_p, seed, compute)
        ctx.x_shape, ctx.x_dtype, ctx.bias_dtype = x.shape, x.dtype, None if bias is None else bias.dtype
        return y.to(result).view(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, dy):
        xa, weight, lora_a, lora_b, *kept = ctx.saved_tensors
        x2 = _saved_input(kept, ctx.input_params)
        scaling, dropout_p, seed, compute = ctx.hyper
        with torch.autocast(dy.device.type, enabled=False):
            dy2 = _flat(dy, compute)
            dx, d_a, d_b = _lora_backward(
                ctx.ops, dy2, x2.to(compute), xa, *_operands(weight, lora_a, lora_b, compute), scaling, dropout_p, seed,
                ctx.needs_input_grad[0], (lora_a.dtype, lora_b.dtype),
            )
            d_bias = dy2.sum(0, dtype=torch.float32).to(ctx.bias_dtype) if ctx.needs_input_grad[5] else None
        dx = None if dx is None else dx.to(ctx.x_dtype).view(ctx.x_shape)
        return dx, None, d_a, d_b, None, d_bias, None


def lora_linear(x, weight, lora_a, lora_b, scaling, bias=None, dropout_p=0.0):
    """x @ weight.T + bias + scaling * (dropout(x) @ lora_a.T) @ lora_b.T, differentiable in x, lora_a, lora_b, bias.

    x[..., in]; weight[out, in] (frozen, dense or bitsandbytes Params4bit); lora_a[r, in]; lora_b[out, r].
    Computes and returns the dtypes described in the module doc (x.dtype without autocast). dropout_p applies to the LoRA branch only (pass 0 in eval mode).
    """
    _check_frozen(weight)
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    return _LoRALinear.apply(x, weight, lora_a, lora_b, float(scaling), bias, float(dropout_p))


class _LoRAMLP(torch.autograd.Function):
    """down(act(gate(x)) * up(x)); keeps x, gate(x), up(x), three [tokens, r] tensors and three dropout seeds,
    recomputes the product (and every dropout mask) in backward. With recompute, gate(x) and up(x) are not kept
    either: backward rebuilds them from x and the kept [tokens, r] tensors (two base matmuls and two rank-r
    products, no dropout redrawn), which gives back exactly the forward's values."""

    @staticmethod
    def forward(ctx, x, act, dropout_p, recompute, gate_w, gate_a, gate_b, gate_s, up_w, up_a, up_b, up_s, down_w,
                down_a, down_b, down_s):
        compute, result = _dtypes(x, gate_w)
        # one mask per projection, as PEFT's per-projection dropout modules draw them
        seeds = tuple(draw_dropout_seed() if dropout_p > 0 else 0 for _ in range(3))
        x2 = x.reshape(-1, x.shape[-1]).contiguous()
        ops = ctx.ops = _low_rank_ops(x2, gate_a)

        def project(inp, weight, lora_a, lora_b, scaling, seed):
            return _lora_forward(ops, inp, *_operands(weight, lora_a, lora_b, compute), scaling, None, dropout_p, seed)

        with torch.autocast(x.device.type, enabled=False):
            x_c = x2.to(compute)
            gate, xa_gate = project(x_c, gate_w, gate_a, gate_b, gate_s, seeds[0])
            up, xa_up = project(x_c, up_w, up_a, up_b, up_s, seeds[1])
            del x_c  # a compute-dtype copy (autocast) is not kept: backward casts x2 again
            # the product only feeds down's forward: it lives in the workspace (so do backward's temporaries)
            into = workspace(gate.shape, (torch.float32, torch.float32), gate.device)
            hidden = gated_act_forward_keeping_act(gate, up, act, into)[0]
            y, xa_down = project(hidden, down_w, down_a, down_b, down_s, seeds[2])
        inputs, ctx.input_params = _input_to_save(x, x2)
        ctx.n_kept = 0 if recompute else 2
        ctx.save_for_backward(
            xa_gate, xa_up, xa_down, gate_w, gate_a, gate_b, up_w, up_a, up_b, down_w, down_a, down_b,
            *(() if recompute else (gate, up)), *inputs
        )
        ctx.act, ctx.scalings, ctx.compute, ctx.x_shape, ctx.x_dtype = act, (gate_s, up_s, down_s), compute, x.shape, x.dtype
        ctx.dropout = (dropout_p, seeds)
        return y.to(result).view(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, dy):
        xa_gate, xa_up, xa_down, gate_w, gate_a, gate_b, up_w, up_a, up_b, down_w, down_a, down_b, *rest = (
            ctx.saved_tensors
        )
        kept, inputs = rest[: ctx.n_kept], rest[ctx.n_kept:]
        gate_s, up_s, down_s = ctx.scalings
        compute, need_dx = ctx.compute, ctx.needs_input_grad[0]
        dropout_p, (gate_seed, up_seed, down_seed) = ctx.dropout
        x2 = _saved_input(inputs, ctx.input_params).to(compute)

        # after the saved tensors are unpacked: a checkpointed layer's forward reruns there and uses the workspace
        activated_into, hidden_into, dh_into, *gate_up_into = workspace(
            (x2.shape[0], down_a.shape[1]), (torch.float32, torch.float32, compute) + (() if kept else (compute,) * 2),
            x2.device)

        def recomputed(xa, weight, lora_a, lora_b, scaling, into):
            weight, _, lora_b = _operands(weight, lora_a, lora_b, compute)
            return _lora_output(x2, weight, xa, lora_b, scaling, out=into)

        def project_back(grad, inp, xa, weight, lora_a, lora_b, scaling, seed, need_dx, dx_into=None):
            return _lora_backward(
                ctx.ops, grad, inp, xa, *_operands(weight, lora_a, lora_b, compute), scaling, dropout_p, seed, need_dx,
                (lora_a.dtype, lora_b.dtype), dx_into,
            )

        with torch.autocast(dy.device.type, enabled=False):
            if kept:
                gate, up = kept
            else:
                gate = recomputed(xa_gate, gate_w, gate_a, gate_b, gate_s, gate_up_into[0])
                up = recomputed(xa_up, up_w, up_a, up_b, up_s, gate_up_into[1])
            hidden, activated = gated_act_forward_keeping_act(gate, up, ctx.act, (activated_into, hidden_into))
            dh, d_down_a, d_down_b = project_back(
                _flat(dy, compute), hidden, xa_down, down_w, down_a, down_b, down_s, down_seed, True, dh_into)
            # hidden and dh are dead once read: the activation backward writes d(gate), d(up) over them.
            d_gate, d_up = gated_act_backward(dh, gate, up, ctx.act, dg=hidden, du=dh, activated=activated)
            del activated
            dx, d_gate_a, d_gate_b = project_back(d_gate, x2, xa_gate, gate_w, gate_a, gate_b, gate_s, gate_seed,
                                                  need_dx)
            dx_up, d_up_a, d_up_b = project_back(d_up, x2, xa_up, up_w, up_a, up_b, up_s, up_seed, need_dx)
        if dx is not None:
            dx = dx.add_(dx_up).to(ctx.x_dtype).view(ctx.x_shape)
        return (dx, None, None, None, None, d_gate_a, d_gate_b, None, None, d_up_a, d_up_b, None, None, d_down_a,
                d_down_b, None)


def lora_mlp(x, gate, up, down, activation="swiglu", dropout_p=0.0, recompute=False):
    """down_proj(act(gate_proj(x)) * up_proj(x)), each projection a LoRA linear without bias.

    gate, up, down: (weight, lora_a, lora_b, scaling) bundles as for lora_linear.
    activation: "swiglu" (silu; LLaMA, Mistral, Qwen) or "geglu" (tanh-approximated gelu; Gemma).
    dropout_p: LoRA dropout on each projection's low-rank input, a mask of its own per projection, as PEFT's
    lora_dropout modules apply (pass 0 in eval mode).
    recompute: keep neither gate(x) nor up(x) for the backward but recompute them there (selective checkpointing:
    2 x [tokens, intermediate] less memory per block for two more base matmuls in its backward); same results.
    """
    if activation not in _MLP_ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_MLP_ACTIVATIONS)}, got {activation!r}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    flat = []
    for weight, lora_a, lora_b, scaling in (gate, up, down):
        _check_frozen(weight)
        flat += [weight, lora_a, lora_b, float(scaling)]
    return _LoRAMLP.apply(x, _MLP_ACTIVATIONS[activation], float(dropout_p), bool(recompute), *flat)

"""RMSNorm with fp32 statistics and a gradient for the weight, in the casting order of Llama or of Gemma.

Llama order (``cast_before_weight=True``, transformers' LlamaRMSNorm / Qwen3RMSNorm): normalise in fp32, round
to the input dtype, then multiply by the weight; the result has the promoted dtype of input and weight, as
``weight * hidden.to(input_dtype)`` does. Gemma order (``False``, GemmaRMSNorm / Gemma3RMSNorm): multiply by
``offset + weight`` in fp32, then round to the input dtype.

Only 1/rms per row is kept for the backward; the normalised rows are recomputed there. The output also carries
its recipe (norm_recipe()): a consumer that needs it in its own backward (the LoRA projections behind a decoder
norm) can keep the norm's input and weight, which the norm keeps anyway, and rebuild the output there (rebuild()),
so no [N, H] copy of the output stays alive. The recipe goes through save_for_backward like any saved tensor, so
activation checkpointing and in-place checks see it.
"""
import torch

from . import triton_norm
from ._backend import use_triton

# fp32 temporaries of the PyTorch path are bounded by this many elements, whatever the batch size.
_CHUNK_ELEMENTS = 1 << 20


def _row_chunks(n_rows: int, n_cols: int):
    step = max(1, _CHUNK_ELEMENTS // max(1, n_cols))
    return [(start, min(start + step, n_rows)) for start in range(0, n_rows, step)]


def _dot_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-row dot products of fp32 rows, in fp32 also under autocast (which would run vecdot in its dtype)."""
    with torch.autocast(a.device.type, enabled=False):
        return torch.linalg.vecdot(a, b)


def _rounded(h: torch.Tensor, cast_before_weight: bool, dtype: torch.dtype) -> torch.Tensor:
    """The normalised rows as the weight sees them: rounded to the input dtype in the Llama order."""
    return h.to(dtype).float() if cast_before_weight else h


def torch_rms_norm_forward(x, weight, eps: float, offset: float, cast_before_weight: bool, out_dtype: torch.dtype):
    """The Triton forward's algorithm in PyTorch: x[N, H] -> (y[N, H] in out_dtype, rstd[N] fp32)."""
    n_rows, n_cols = x.shape
    y = torch.empty((n_rows, n_cols), dtype=out_dtype, device=x.device)
    rstd = torch.empty(n_rows, dtype=torch.float32, device=x.device)
    scale = weight.float() + offset
    # no rounding between normalising and scaling (fp32, or the Gemma order): write the product into y directly
    unrounded = y.dtype == torch.float32 and (x.dtype == torch.float32 or not cast_before_weight)
    for start, end in _row_chunks(n_rows, n_cols):
        x_rows = x[start:end].float()  # the input itself when it is fp32: no in-place ops on it
        r = rstd[start:end]
        torch.rsqrt(_dot_rows(x_rows, x_rows).div_(n_cols).add_(eps), out=r)
        if unrounded:
            torch.mul(x_rows, r[:, None], out=y[start:end]).mul_(scale)
        else:
            y[start:end] = _rounded(x_rows * r[:, None], cast_before_weight, x.dtype).mul_(scale)
    return y, rstd


def torch_rms_norm_backward(dy, x, weight, rstd, offset: float, cast_before_weight: bool, weight_grad: bool):
    """The Triton backward's algorithm in PyTorch: -> (dx[N, H] in x's dtype, dweight[H] fp32 or None)."""
    n_rows, n_cols = x.shape
    dx = torch.empty((n_rows, n_cols), dtype=x.dtype, device=x.device)
    dw = torch.zeros(n_cols, dtype=torch.float32, device=x.device) if weight_grad else None
    scale = weight.float() + offset
    for start, end in _row_chunks(n_rows, n_cols):
        r = rstd[start:end, None]
        h = x[start:end].float() * r
        dy_rows = dy[start:end].float()
        g = dy_rows * scale
        # d/dx of x * rstd(x) is rstd * (g - h * mean(g * h)); Llama's cast passes gradients straight through
        coefficient = _dot_rows(g, h).div_(n_cols).unsqueeze(1).mul_(r)
        if dx.dtype == torch.float32:
            torch.mul(g, r, out=dx[start:end]).addcmul_(h, coefficient, value=-1.0)
        else:
            dx[start:end] = g.mul_(r).addcmul_(h, coefficient, value=-1.0)
        if weight_grad:
            dw += (dy_rows * _rounded(h, cast_before_weight, x.dtype)).sum(dim=0)
    return dx, dw


def _rows(t: torch.Tensor) -> torch.Tensor:
    """[..., H] -> [N, H] with unit column stride (a view when the layout allows)."""
    rows = t.reshape(-1, t.shape[-1])
    return rows if rows.stride(-1) == 1 else rows.contiguous()


def _forward(x_rows, weight, eps: float, offset: float, cast_before_weight: bool, triton_path: bool, out_dtype):
    """(y[N, H], rstd[N]) on the chosen path: the one forward of RMSNormFunction and of rebuild()."""
    forward = triton_norm.rms_norm_forward if triton_path else torch_rms_norm_forward
    return forward(x_rows, weight, eps, offset, cast_before_weight, out_dtype)


class RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps, offset, cast_before_weight, triton_path):
        out_dtype = torch.promote_types(x.dtype, weight.dtype) if cast_before_weight else x.dtype
        x_rows, weight = _rows(x), weight.contiguous()
        y, rstd = _forward(x_rows, weight, eps, offset, cast_before_weight, triton_path, out_dtype)
        ctx.save_for_backward(x_rows, weight, rstd)
        ctx.config = (x.shape, offset, cast_before_weight, triton_path)
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, dy):
        x_rows, weight, rstd = ctx.saved_tensors
        shape, offset, cast_before_weight, triton_path = ctx.config
        backward = triton_norm.rms_norm_backward if triton_path else torch_rms_norm_backward
        # A frozen weight (LoRA) gets no gradient: its reduction over rows is skipped, not computed and dropped.
        dx, dw = backward(_rows(dy), x_rows, weight, rstd, offset, cast_before_weight, ctx.needs_input_grad[1])
        return dx.view(shape), None if dw is None else dw.to(weight.dtype), None, None, None, None


def norm_recipe(t: torch.Tensor):
    """((input, weight), params) rebuilding t bit for bit if t is an rms_norm output, else None. (autograd refuses
    any use of an output changed in place, so a recipe that autograd lets a consumer keep is still exact.)"""
    return getattr(t, "fastft_norm_recipe", None)


def rebuild(tensors, params) -> torch.Tensor:
    """The [N, H] output that norm_recipe() described, computed again by the same forward."""
    x, weight = tensors
    return _forward(_rows(x), weight.contiguous(), *params)[0]  # params: (eps, offset, cast, triton_path, out_dtype)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, offset: float = 0.0,
             cast_before_weight: bool = None) -> torch.Tensor:
    """RMSNorm of x[..., H] scaled by (offset + weight[H]); offset=1.0 is Gemma's (1 + w).

    cast_before_weight picks the casting order (see the module docstring); by default it is the Llama order
    when offset == 0 and the Gemma order otherwise, which reproduces each family's transformers module.
    """
    if weight.dim() != 1 or weight.shape[0] != x.shape[-1]:
        raise ValueError(f"rms_norm: weight shape {tuple(weight.shape)} does not match hidden size {x.shape[-1]}")
    if cast_before_weight is None:
        cast_before_weight = offset == 0.0
    args = (float(eps), float(offset), bool(cast_before_weight), use_triton(x, weight))
    # The rows the function keeps (a copy when x's layout needs one, as for the [B, T, H, D].transpose(1, 2) q/k a
    # q_norm reads) are the recipe's input: a consumer keeping the recipe then keeps no storage of its own.
    x_rows = _rows(x)
    y = RMSNormFunction.apply(x_rows, weight, *args).view(x.shape)
    if y.requires_grad:
        y.fastft_norm_recipe = ((x_rows, weight), (*args, y.dtype))
    return y

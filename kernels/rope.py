"""Rotary position embedding in the rotate_half convention of Hugging Face Llama, Qwen and Gemma.

apply_rope(q, k, cos, sin) equals transformers' apply_rotary_pos_emb(q, k, cos, sin): the math runs in fp32 on
cos/sin exactly as given, with one rounding at the end to the dtype torch's type promotion gives there
(q's dtype when cos/sin already have it, as Hugging Face rotary embeddings return them).
q and k keep their layout (the [B, T, H, D].transpose(1, 2) views attention code makes are read in place).
cos/sin are not differentiated.

A rotated q or k whose input is an rms_norm output (Gemma 3's q_norm / k_norm) carries its recipe (rope_recipe()):
the norm's kept rows and weight and the cos/sin this function keeps anyway. Attention saves that instead of the
rotated tensor and rebuilds it in backward (rebuild_rope()), so no [B, H, T, D] copy of q or k stays alive.
"""
import torch

from . import triton_rope
from ._backend import use_triton
from .rms_norm import norm_recipe, rebuild


def torch_rope_rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, out_dtype: torch.dtype, adjoint: bool):
    """The Triton kernel's algorithm in PyTorch: x[B, H, T, D], cos/sin[B, T, D] -> rotated x in out_dtype."""
    half = x.shape[-1] // 2
    cos, sin = cos.float().unsqueeze(1), sin.float().unsqueeze(1)
    if adjoint:  # transpose of x -> x * cos + rotate_half(x) * sin
        sin = -sin.roll(half, dims=-1)
    x = x.float()
    # x * cos + rotate_half(x) * sin, the rotated halves added in place (no rotate_half copy of x)
    out = torch.mul(x, cos)
    out[..., :half].addcmul_(x[..., half:], sin[..., :half], value=-1.0)
    out[..., half:].addcmul_(x[..., :half], sin[..., half:])
    return out.to(out_dtype)


def _rotator(triton_path: bool):
    return triton_rope.rope_rotate if triton_path else torch_rope_rotate


class RoPEFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, cos, sin, triton_path):
        rotate = _rotator(triton_path)
        table_dtype = torch.promote_types(cos.dtype, sin.dtype)
        q_out = rotate(q, cos, sin, torch.promote_types(q.dtype, table_dtype), adjoint=False)
        k_out = rotate(k, cos, sin, torch.promote_types(k.dtype, table_dtype), adjoint=False)
        ctx.save_for_backward(cos, sin)
        ctx.config = (q.dtype, k.dtype, triton_path)
        return q_out, k_out

    @staticmethod
    def backward(ctx, dq_out, dk_out):
        cos, sin = ctx.saved_tensors
        q_dtype, k_dtype, triton_path = ctx.config
        rotate = _rotator(triton_path)
        dq = rotate(dq_out, cos, sin, q_dtype, adjoint=True) if ctx.needs_input_grad[0] else None
        dk = rotate(dk_out, cos, sin, k_dtype, adjoint=True) if ctx.needs_input_grad[1] else None
        return dq, dk, None, None, None


def apply_rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """(q[B, Hq, T, D], k[B, Hk, T, D], cos/sin[B, T, D]) -> (q_rot, k_rot); Hq may differ from Hk.

    cos/sin may also have batch size 1 (or no batch dim): they are broadcast over the batch without a copy.
    """
    if q.dim() != 4 or k.dim() != 4:
        raise ValueError(f"apply_rope: q and k must be [B, H, T, D], got {tuple(q.shape)} and {tuple(k.shape)}")
    batch, _, seq_len, head_dim = q.shape
    if head_dim % 2 or k.shape[0] != batch or k.shape[2:] != q.shape[2:]:
        raise ValueError(f"apply_rope: q {tuple(q.shape)} and k {tuple(k.shape)} need the same B, T and an even D")
    if cos.shape[-2:] != (seq_len, head_dim) or sin.shape != cos.shape:
        raise ValueError(f"apply_rope: cos/sin {tuple(cos.shape)}, {tuple(sin.shape)} "
                         f"do not match [B, {seq_len}, {head_dim}]")
    cos, sin = cos.expand(batch, seq_len, head_dim), sin.expand(batch, seq_len, head_dim)
    triton_path = use_triton(q, k, cos, sin)
    q_out, k_out = RoPEFunction.apply(q, k, cos, sin, triton_path)
    for x, out in ((q, q_out), (k, k_out)):
        recipe = norm_recipe(x)
        if recipe is not None and out.requires_grad:
            out.fastft_rope_recipe = ((*recipe[0], cos, sin), (recipe[1], x.shape, out.dtype, triton_path),
                                      out._version)
    return q_out, k_out


def rope_recipe(t: torch.Tensor):
    """(tensors, params) rebuilding t bit for bit if t is apply_rope's rotation of an rms_norm output and has not
    been changed in place since, else None."""
    recipe = getattr(t, "fastft_rope_recipe", None)
    return None if recipe is None or recipe[2] != t._version else recipe[:2]


def rebuild_rope(tensors, params) -> torch.Tensor:
    """The rotated tensor rope_recipe() described: the norm's output rebuilt, then rotated by the same forward."""
    *norm_tensors, cos, sin = tensors
    norm_params, shape, out_dtype, triton_path = params
    rotate = _rotator(triton_path)
    return rotate(rebuild(norm_tensors, norm_params).view(shape), cos, sin, out_dtype, adjoint=False)

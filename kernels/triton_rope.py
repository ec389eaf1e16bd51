"""Triton rotary embedding in the rotate_half convention, on strided [B, H, T, D] tensors.

One program per (batch, position): it loads that position's cos/sin halves once and rotates every head.
The backward is the same kernel with the adjoint rotation, (sin1, sin2) -> (-sin2, -sin1).
"""
import torch
import triton
import triton.language as tl

from ._device import device_guard

_MAX_TILE = 4096  # elements (heads x half head dim) one program holds at a time


@triton.jit
def _rope_kernel(x_ptr, cos_ptr, sin_ptr, out_ptr, n_heads, seq_len, half,
                 x_sb, x_sh, x_st, x_sd, o_sb, o_sh, o_st, o_sd, c_sb, c_st, c_sd, s_sb, s_st, s_sd,
                 ADJOINT: tl.constexpr, BLOCK_HEADS: tl.constexpr, BLOCK_HALF: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    b = pid // seq_len
    t = pid % seq_len
    d = tl.arange(0, BLOCK_HALF)
    d_mask = d < half

    cos_row = cos_ptr + b * c_sb + t * c_st
    sin_row = sin_ptr + b * s_sb + t * s_st
    c1 = tl.load(cos_row + d * c_sd, mask=d_mask, other=0.0).to(tl.float32)[None, :]
    c2 = tl.load(cos_row + (d + half) * c_sd, mask=d_mask, other=0.0).to(tl.float32)[None, :]
    s1 = tl.load(sin_row + d * s_sd, mask=d_mask, other=0.0).to(tl.float32)[None, :]
    s2 = tl.load(sin_row + (d + half) * s_sd, mask=d_mask, other=0.0).to(tl.float32)[None, :]
    if ADJOINT:
        s1, s2 = -s2, -s1

    for h0 in range(0, n_heads, BLOCK_HEADS):
        heads = h0 + tl.arange(0, BLOCK_HEADS)
        mask = (heads < n_heads)[:, None] & d_mask[None, :]
        x_lo = x_ptr + b * x_sb + t * x_st + heads[:, None] * x_sh + d[None, :] * x_sd
        o_lo = out_ptr + b * o_sb + t * o_st + heads[:, None] * o_sh + d[None, :] * o_sd
        x1 = tl.load(x_lo, mask=mask, other=0.0).to(tl.float32)
        x2 = tl.load(x_lo + half * x_sd, mask=mask, other=0.0).to(tl.float32)
        # x * cos + rotate_half(x) * sin, with rotate_half(x) = cat(-x2, x1)
        o1 = x1 * c1 - x2 * s1
        o2 = x2 * c2 + x1 * s2
        tl.store(o_lo, o1.to(out_ptr.dtype.element_ty), mask=mask)
        tl.store(o_lo + half * o_sd, o2.to(out_ptr.dtype.element_ty), mask=mask)


def rope_rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, out_dtype: torch.dtype, adjoint: bool):
    """x[B, H, T, D] (any strides), cos/sin[B, T, D] (any strides, 0 allowed) -> rotated x, laid out like x."""
    batch, n_heads, seq_len, head_dim = x.shape
    half = head_dim // 2
    out = torch.empty_like(x, dtype=out_dtype)
    block_half = triton.next_power_of_2(half)
    block_heads = min(triton.next_power_of_2(n_heads), max(1, _MAX_TILE // block_half))
    num_warps = min(8, max(1, block_heads * block_half // 256))
    with device_guard(x):
        _rope_kernel[(batch * seq_len,)](x, cos, sin, out, n_heads, seq_len, half,
                                         *x.stride(), *out.stride(), *cos.stride(), *sin.stride(),
                                         ADJOINT=adjoint, BLOCK_HEADS=block_heads, BLOCK_HALF=block_half,
                                         num_warps=num_warps)
    return out

"""Triton kernels for the parts of a LoRA layer that cuBLAS cannot fuse: the low-rank products with dropout.

The base products (x @ W.T, dy @ W) and the dropout-free rank-r updates stay with torch (cuBLAS); these three
kernels cover the rest:
  _skinny_kernel       out[M, R] = scale * drop(X) @ P, split over K    (xa = drop(x) @ A.T, and dxa = s * dy @ B)
  _lowrank_add_kernel  out[M, N] += scale * drop(L @ U)                 (dx += drop(dxa @ A) / (1 - p))
  _tn_kernel           out[P, Q] = scale * U.T @ drop(V), split over M  (dA = dxa.T @ drop(x), dB = s * dy.T @ xa)
Dropout never materialises a mask: keep(r, c) is a hash of (seed, r * n_cols + c), regenerated wherever needed.
Dots take compute-dtype operands (fp32 when the interpreter meets bf16, whose tl.dot it gets wrong) and
accumulate in fp32. Every offset derived from a program id is int64. Tile sizes come from lora_tiles, which sizes
them to the shared memory of the device holding the tensors; launches run on that device.
"""
import torch
import triton
import triton.language as tl

from . import _device, lora_tiles
from ._backend import interpreting
from .triton_act import kernel_out_dtype

# lowbias32 multipliers (C. Wellons); tests/kernels/test_lora.py re-implements the hash as the mask's reference.
HASH_MUL_1 = tl.constexpr(0x7FEB352D)
HASH_MUL_2 = tl.constexpr(0x846CA68B)
KEEP_BITS = 24  # keep(r, c) compares the top 24 hash bits against round(p * 2**24)
_KEEP_SHIFT = tl.constexpr(32 - KEEP_BITS)
_PROGRAMS_PER_SM = 2  # split the reduction until the grid has this many programs per SM


def dropout_threshold(p: float) -> int:
    return round(p * (1 << KEEP_BITS))


@triton.jit
def _mix32(h):
    h = h ^ (h >> 16)
    h = h * HASH_MUL_1
    h = h ^ (h >> 15)
    h = h * HASH_MUL_2
    return h ^ (h >> 16)


@triton.jit
def _keep(seed, rows, cols, n_cols, threshold):
    """Dropout keep-mask of the tile rows x cols of a matrix with n_cols columns (indices wrap at 2**32)."""
    idx = rows.to(tl.uint32)[:, None] * n_cols.to(tl.uint32) + cols.to(tl.uint32)[None, :]
    h = _mix32(_mix32(idx) ^ seed.to(tl.uint32))
    return (h >> _KEEP_SHIFT).to(tl.int32) >= threshold


@triton.jit
def _dot(a, b, acc, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision=PRECISION)
    return tl.dot(a, b.to(a.dtype), acc, input_precision=PRECISION)


@triton.jit(do_not_specialize=["seed"])
def _skinny_kernel(
    x_ptr, p_ptr, out_ptr, M, K, R, k_per_split,
    stride_xm, stride_xk, stride_pk, stride_pr,
    scale, seed, threshold,
    DROPOUT: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    ranks = tl.program_id(1).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    split = tl.program_id(2).to(tl.int64)
    row_ok, rank_ok = rows < M, ranks < R
    k_end = min(K, (split + 1) * k_per_split)
    x_rows = x_ptr + rows[:, None] * stride_xm
    p_cols = p_ptr + ranks[None, :] * stride_pr
    acc = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
    for k0 in range(split * k_per_split, k_end, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < k_end
        x = tl.load(x_rows + ks[None, :] * stride_xk, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        if DROPOUT:
            x = tl.where(_keep(seed, rows, ks, K, threshold), x, 0.0)
        p = tl.load(p_cols + ks[:, None] * stride_pk, mask=k_ok[:, None] & rank_ok[None, :], other=0.0)
        acc = _dot(x, p, acc, UPCAST, PRECISION)
    out = out_ptr + (split * M + rows)[:, None] * R + ranks[None, :]
    tl.store(out, acc * scale, mask=row_ok[:, None] & rank_ok[None, :])


@triton.jit(do_not_specialize=["seed"])
def _lowrank_add_kernel(
    out_ptr, l_ptr, u_ptr, M, N, R,
    stride_om, stride_lm, stride_lr, stride_ur, stride_un,
    scale, seed, threshold,
    DROPOUT: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok, col_ok = rows < M, cols < N
    l_rows = l_ptr + rows[:, None] * stride_lm
    u_cols = u_ptr + cols[None, :] * stride_un
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for r0 in range(0, R, BLOCK_R):
        ranks = r0 + tl.arange(0, BLOCK_R)
        rank_ok = ranks < R
        low_l = tl.load(l_rows + ranks[None, :] * stride_lr, mask=row_ok[:, None] & rank_ok[None, :], other=0.0)
        low_u = tl.load(u_cols + ranks[:, None] * stride_ur, mask=rank_ok[:, None] & col_ok[None, :], other=0.0)
        acc = _dot(low_l, low_u, acc, UPCAST, PRECISION)
    if DROPOUT:
        acc = tl.where(_keep(seed, rows, cols, N, threshold), acc, 0.0)
    out = out_ptr + rows[:, None] * stride_om + cols[None, :]
    ok = row_ok[:, None] & col_ok[None, :]
    base = tl.load(out, mask=ok, other=0.0).to(tl.float32)
    tl.store(out, (base + scale * acc).to(out_ptr.dtype.element_ty), mask=ok)


@triton.jit(do_not_specialize=["seed"])
def _tn_kernel(
    u_ptr, v_ptr, out_ptr, M, P, Q, rows_per_split,
    stride_um, stride_up, stride_vm, stride_vq,
    scale, seed, threshold,
    DROPOUT: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_M: tl.constexpr,
):
    ps = tl.program_id(0).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    qs = tl.program_id(1).to(tl.int64) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    split = tl.program_id(2).to(tl.int64)
    p_ok, q_ok = ps < P, qs < Q
    u_cols = u_ptr + ps[:, None] * stride_up
    v_cols = v_ptr + qs[None, :] * stride_vq
    acc = tl.zeros((BLOCK_P, BLOCK_Q), dtype=tl.float32)
    row_end = min(M, (split + 1) * rows_per_split)
    for m0 in range(split * rows_per_split, row_end, BLOCK_M):
        ms = m0 + tl.arange(0, BLOCK_M)
        m_ok = ms < row_end
        u_t = tl.load(u_cols + ms[None, :] * stride_um, mask=m_ok[None, :] & p_ok[:, None], other=0.0)
        v = tl.load(v_cols + ms[:, None] * stride_vm, mask=m_ok[:, None] & q_ok[None, :], other=0.0)
        if DROPOUT:
            v = tl.where(_keep(seed, ms, qs, Q, threshold), v, 0.0)
        acc = _dot(u_t, v, acc, UPCAST, PRECISION)
    out = out_ptr + (split * P + ps)[:, None] * Q + qs[None, :]
    tl.store(out, acc * scale, mask=p_ok[:, None] & q_ok[None, :])


def _dot_flags(dtype: torch.dtype):
    """(UPCAST, PRECISION): fp32 operands honour torch's TF32 switch, like torch.matmul does."""
    upcast = interpreting() and dtype == torch.bfloat16
    precision = "ieee" if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32 else "tf32"
    return upcast, precision


def _splits(programs: int, device: torch.device, length: int, block: int) -> tuple[int, int]:
    """(splits, length per split, a multiple of block): split a reduction of `length` until the grid fills the GPU."""
    wanted = triton.cdiv(_PROGRAMS_PER_SM * _device.multiprocessor_count(device), programs)
    splits = max(1, min(triton.cdiv(length, block), wanted))
    per_split = triton.cdiv(triton.cdiv(length, splits), block) * block
    return triton.cdiv(length, per_split), per_split


def skinny(x, p, scale: float, dropout_p: float = 0.0, seed: int = 0) -> torch.Tensor:
    """scale * drop(x) @ p for x[M, K] and p[K, R] of one dtype (any strides); returns [M, R] in that dtype."""
    threshold = dropout_threshold(dropout_p)
    (M, K), R = x.shape, p.shape[1]
    tiles = lora_tiles.skinny_tiles(x.device, x.dtype, R, threshold > 0)
    grid_mr = triton.cdiv(M, tiles.a) * triton.cdiv(R, tiles.b)
    splits, k_per_split = _splits(grid_mr, x.device, K, tiles.k)
    partial = torch.empty((splits, M, R), device=x.device, dtype=torch.float32)
    upcast, precision = _dot_flags(x.dtype)
    with _device.device_guard(x):
        _skinny_kernel[(triton.cdiv(M, tiles.a), triton.cdiv(R, tiles.b), splits)](
            x, p, partial, M, K, R, k_per_split, x.stride(0), x.stride(1), p.stride(0), p.stride(1),
            scale, seed, threshold, DROPOUT=threshold > 0, UPCAST=upcast, PRECISION=precision,
            BLOCK_M=tiles.a, BLOCK_R=tiles.b, BLOCK_K=tiles.k, num_warps=tiles.warps, num_stages=tiles.stages,
        )
    return (partial[0] if splits == 1 else partial.sum(0)).to(x.dtype)


def lowrank_add_(out, low_l, low_u, scale: float, dropout_p: float = 0.0, seed: int = 0) -> torch.Tensor:
    """out += scale * drop(low_l @ low_u) in place, for out[M, N] (unit column stride), low_l[M, R], low_u[R, N]
    of one dtype."""
    threshold = dropout_threshold(dropout_p)
    (M, N), R = out.shape, low_l.shape[1]
    tiles = lora_tiles.lowrank_add_tiles(out.device, out.dtype, R)
    # The interpreter would round the sum to bf16 by truncation; let torch round an fp32 copy instead.
    target = out if kernel_out_dtype(out.dtype) == out.dtype else out.to(kernel_out_dtype(out.dtype))
    upcast, precision = _dot_flags(out.dtype)
    with _device.device_guard(out):
        _lowrank_add_kernel[(triton.cdiv(M, tiles.a), triton.cdiv(N, tiles.b))](
            target, low_l, low_u, M, N, R, target.stride(0),
            low_l.stride(0), low_l.stride(1), low_u.stride(0), low_u.stride(1),
            scale, seed, threshold, DROPOUT=threshold > 0, UPCAST=upcast, PRECISION=precision,
            BLOCK_M=tiles.a, BLOCK_N=tiles.b, BLOCK_R=tiles.k, num_warps=tiles.warps, num_stages=tiles.stages,
        )
    return out if target is out else out.copy_(target)


def tn_matmul(u, v, scale: float, out_dtype: torch.dtype, dropout_p: float = 0.0, seed: int = 0) -> torch.Tensor:
    """scale * u.T @ drop(v) for u[M, P], v[M, Q] of one dtype; fp32 partial sums over row splits, in out_dtype."""
    threshold = dropout_threshold(dropout_p)
    (M, P), Q = u.shape, v.shape[1]
    tiles = lora_tiles.tn_tiles(u.device, u.dtype, P, Q, threshold > 0)
    grid_pq = (triton.cdiv(P, tiles.a), triton.cdiv(Q, tiles.b))
    splits, rows_per_split = _splits(grid_pq[0] * grid_pq[1], u.device, M, tiles.k)
    partial = torch.empty((splits, P, Q), device=u.device, dtype=torch.float32)
    upcast, precision = _dot_flags(u.dtype)
    with _device.device_guard(u):
        _tn_kernel[(*grid_pq, splits)](
            u, v, partial, M, P, Q, rows_per_split, u.stride(0), u.stride(1), v.stride(0), v.stride(1),
            scale, seed, threshold, DROPOUT=threshold > 0, UPCAST=upcast, PRECISION=precision,
            BLOCK_P=tiles.a, BLOCK_Q=tiles.b, BLOCK_M=tiles.k, num_warps=tiles.warps, num_stages=tiles.stages,
        )
    return (partial[0] if splits == 1 else partial.sum(0)).to(out_dtype)

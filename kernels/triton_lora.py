"""Triton kernels for a LoRA linear layer  y = x @ W.T + bias + scaling * (drop(x) @ A.T) @ B.T.

Three kernels cover forward and backward:
  _skinny_kernel          out[M, R] = scale * drop(X) @ P          (xa = drop(x) @ A.T, and dxa = s * dy @ B)
  _matmul_lowrank_kernel  out[M, N] = X @ W + bias + scale * drop(L @ U)
                          (forward: the base GEMM whose epilogue adds s * xa @ B.T;
                           backward: dx = dy @ W + drop(dxa @ A), the mask applied to the LoRA term only)
  _tn_kernel              out[P, Q] = scale * U.T @ drop(V), split over rows  (dA = dxa.T @ drop(x), dB = s * dy.T @ xa)
Dropout never materialises a mask: keep(r, c) is a hash of (seed, r * n_cols + c), regenerated wherever needed.
Dots take compute-dtype operands (fp32 when the interpreter meets bf16, whose tl.dot it gets wrong) and
accumulate in fp32.
"""
import torch
import triton
import triton.language as tl

from ._backend import interpreting
from .triton_act import kernel_out_dtype

# lowbias32 multipliers (C. Wellons); tests/kernels/test_lora.py re-implements the hash as the mask's reference.
HASH_MUL_1 = tl.constexpr(0x7FEB352D)
HASH_MUL_2 = tl.constexpr(0x846CA68B)
KEEP_BITS = 24  # keep(r, c) compares the top 24 hash bits against round(p * 2**24)
_KEEP_SHIFT = tl.constexpr(32 - KEEP_BITS)


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
    x_ptr, p_ptr, out_ptr, M, K, R,
    stride_xm, stride_xk, stride_pk, stride_pr,
    scale, seed, threshold,
    DROPOUT: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    ranks = tl.arange(0, BLOCK_R)
    row_ok = rows < M
    x_rows = x_ptr + rows.to(tl.int64)[:, None] * stride_xm
    acc = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_rows + ks[None, :] * stride_xk, mask=row_ok[:, None] & (ks < K)[None, :], other=0.0)
        if DROPOUT:
            x = tl.where(_keep(seed, rows, ks, K, threshold), x, 0.0)
        p = tl.load(p_ptr + ks[:, None] * stride_pk + ranks[None, :] * stride_pr,
                    mask=(ks < K)[:, None] & (ranks < R)[None, :], other=0.0)
        acc = _dot(x, p, acc, UPCAST, PRECISION)
    out = out_ptr + rows.to(tl.int64)[:, None] * R + ranks[None, :]
    tl.store(out, (acc * scale).to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & (ranks < R)[None, :])


@triton.jit(do_not_specialize=["seed"])
def _matmul_lowrank_kernel(
    x_ptr, w_ptr, l_ptr, u_ptr, bias_ptr, out_ptr, M, N, K, R,
    stride_xm, stride_xk, stride_wk, stride_wn, stride_lm, stride_lr, stride_ur, stride_un,
    scale, seed, threshold,
    HAS_BIAS: tl.constexpr, DROPOUT: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    # Grouped ordering: GROUP_M row blocks sweep the columns together so their W tiles stay in L2.
    pid = tl.program_id(0)
    blocks_m, blocks_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    first_m = (pid // (GROUP_M * blocks_n)) * GROUP_M
    group_rows = min(blocks_m - first_m, GROUP_M)
    pid_m = first_m + (pid % (GROUP_M * blocks_n)) % group_rows
    pid_n = (pid % (GROUP_M * blocks_n)) // group_rows

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok, col_ok = rows < M, cols < N
    x_rows = x_ptr + rows.to(tl.int64)[:, None] * stride_xm
    w_cols = w_ptr + cols.to(tl.int64)[None, :] * stride_wn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_rows + ks[None, :] * stride_xk, mask=row_ok[:, None] & (ks < K)[None, :], other=0.0)
        w = tl.load(w_cols + ks[:, None] * stride_wk, mask=(ks < K)[:, None] & col_ok[None, :], other=0.0)
        acc = _dot(x, w, acc, UPCAST, PRECISION)

    # Epilogue: the rank-R term costs R/K of the main loop and never leaves registers.
    ranks = tl.arange(0, BLOCK_R)
    low_l = tl.load(l_ptr + rows.to(tl.int64)[:, None] * stride_lm + ranks[None, :] * stride_lr,
                    mask=row_ok[:, None] & (ranks < R)[None, :], other=0.0)
    low_u = tl.load(u_ptr + ranks[:, None] * stride_ur + cols[None, :] * stride_un,
                    mask=(ranks < R)[:, None] & col_ok[None, :], other=0.0)
    low = _dot(low_l, low_u, tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32), UPCAST, PRECISION)
    if DROPOUT:
        low = tl.where(_keep(seed, rows, cols, N, threshold), low, 0.0)
    acc += scale * low
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    out = out_ptr + rows.to(tl.int64)[:, None] * N + cols[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


@triton.jit(do_not_specialize=["seed"])
def _tn_kernel(
    u_ptr, v_ptr, out_ptr, M, P, Q, rows_per_split,
    stride_um, stride_up, stride_vm, stride_vq,
    scale, seed, threshold,
    DROPOUT: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr,
):
    ps = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    qs = tl.program_id(1) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    split = tl.program_id(2)
    acc = tl.zeros((BLOCK_P, BLOCK_Q), dtype=tl.float32)
    row_end = min(M, (split + 1) * rows_per_split)
    for m0 in range(split * rows_per_split, row_end, BLOCK_M):
        ms = m0 + tl.arange(0, BLOCK_M)
        m_ok = ms < row_end
        m_off = ms.to(tl.int64)
        u_t = tl.load(u_ptr + m_off[None, :] * stride_um + ps[:, None] * stride_up,
                      mask=m_ok[None, :] & (ps < P)[:, None], other=0.0)
        v = tl.load(v_ptr + m_off[:, None] * stride_vm + qs[None, :] * stride_vq,
                    mask=m_ok[:, None] & (qs < Q)[None, :], other=0.0)
        if DROPOUT:
            v = tl.where(_keep(seed, ms, qs, Q, threshold), v, 0.0)
        acc = _dot(u_t, v, acc, UPCAST, PRECISION)
    out = out_ptr + (split * P + ps.to(tl.int64))[:, None] * Q + qs[None, :]
    tl.store(out, acc * scale, mask=(ps < P)[:, None] & (qs < Q)[None, :])


def _rank_block(r: int) -> int:
    return max(16, triton.next_power_of_2(r))


def _dot_flags(dtype: torch.dtype):
    """(UPCAST, PRECISION): fp32 operands honour torch's TF32 switch, like torch.matmul does."""
    upcast = interpreting() and dtype == torch.bfloat16
    precision = "ieee" if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32 else "tf32"
    return upcast, precision


def _tiles(dtype: torch.dtype):
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages); small tiles keep the interpreter fast."""
    if interpreting():
        return 32, 32, 32, 1, 1
    return (128, 128, 32, 8, 3) if dtype == torch.float32 else (128, 128, 64, 8, 3)


def skinny(x, p, scale: float, seed: int = 0, threshold: int = 0) -> torch.Tensor:
    """scale * drop(x) @ p for x[M, K] and p[K, R] (any strides); returns [M, R] in x.dtype."""
    (M, K), R = x.shape, p.shape[1]
    out = torch.empty((M, R), device=x.device, dtype=kernel_out_dtype(x.dtype))
    block_m, _, block_k, warps, stages = _tiles(x.dtype)
    upcast, precision = _dot_flags(x.dtype)
    _skinny_kernel[(triton.cdiv(M, block_m),)](
        x, p, out, M, K, R, x.stride(0), x.stride(1), p.stride(0), p.stride(1),
        scale, seed, threshold, DROPOUT=threshold > 0, UPCAST=upcast, PRECISION=precision,
        BLOCK_M=block_m, BLOCK_K=block_k, BLOCK_R=_rank_block(R), num_warps=min(warps, 4), num_stages=stages,
    )
    return out.to(x.dtype)


def matmul_lowrank(x, w, low_l, low_u, bias, scale: float, seed: int = 0, threshold: int = 0) -> torch.Tensor:
    """x @ w + bias + scale * drop(low_l @ low_u) for x[M, K], w[K, N], low_l[M, R], low_u[R, N] (any strides)."""
    (M, K), N, R = x.shape, w.shape[1], low_l.shape[1]
    out = torch.empty((M, N), device=x.device, dtype=kernel_out_dtype(x.dtype))
    block_m, block_n, block_k, warps, stages = _tiles(x.dtype)
    upcast, precision = _dot_flags(x.dtype)
    grid = (triton.cdiv(M, block_m) * triton.cdiv(N, block_n),)
    _matmul_lowrank_kernel[grid](
        x, w, low_l, low_u, out if bias is None else bias, out, M, N, K, R,
        x.stride(0), x.stride(1), w.stride(0), w.stride(1),
        low_l.stride(0), low_l.stride(1), low_u.stride(0), low_u.stride(1),
        scale, seed, threshold, HAS_BIAS=bias is not None, DROPOUT=threshold > 0, UPCAST=upcast,
        PRECISION=precision, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, BLOCK_R=_rank_block(R),
        GROUP_M=8, num_warps=warps, num_stages=stages,
    )
    return out.to(x.dtype)


def tn_matmul(u, v, scale: float, out_dtype: torch.dtype, seed: int = 0, threshold: int = 0) -> torch.Tensor:
    """scale * u.T @ drop(v) for u[M, P], v[M, Q]; fp32 partial sums over row splits, returned in out_dtype."""
    (M, P), Q = u.shape, v.shape[1]
    block_m, block_n, _, warps, stages = _tiles(u.dtype)
    block_p, block_q = (_rank_block(d) if d <= 64 else block_n for d in (P, Q))
    tiles = triton.cdiv(P, block_p) * triton.cdiv(Q, block_q)
    # Enough row splits to fill the GPU when the output is small (dA is only r x in).
    programs = 4 * torch.cuda.get_device_properties(u.device).multi_processor_count if u.is_cuda else 4
    splits = max(1, min(triton.cdiv(M, block_m), programs // tiles))
    rows_per_split = triton.cdiv(triton.cdiv(M, splits), block_m) * block_m
    splits = triton.cdiv(M, rows_per_split)
    partial = torch.empty((splits, P, Q), device=u.device, dtype=torch.float32)
    upcast, precision = _dot_flags(u.dtype)
    _tn_kernel[(triton.cdiv(P, block_p), triton.cdiv(Q, block_q), splits)](
        u, v, partial, M, P, Q, rows_per_split, u.stride(0), u.stride(1), v.stride(0), v.stride(1),
        scale, seed, threshold, DROPOUT=threshold > 0, UPCAST=upcast, PRECISION=precision,
        BLOCK_M=block_m, BLOCK_P=block_p, BLOCK_Q=block_q, num_warps=min(warps, 4), num_stages=stages,
    )
    return partial.sum(0).to(out_dtype)


def lora_forward(x, weight, lora_a, lora_b, scaling: float, bias, dropout_p: float, seed: int):
    """(y, xa) for 2-D contiguous x and a dense weight already in x.dtype."""
    threshold = dropout_threshold(dropout_p)
    xa = skinny(x, lora_a.t(), 1.0 / (1.0 - dropout_p), seed, threshold)
    return matmul_lowrank(x, weight.t(), xa, lora_b.t(), bias, scaling), xa


def lora_backward(dy, x, xa, weight, lora_a, lora_b, scaling: float, dropout_p: float, seed: int, need_dx: bool):
    """(dx or None, dA, dB) for 2-D contiguous dy; the dropout mask is regenerated from seed."""
    threshold, keep_scale = dropout_threshold(dropout_p), 1.0 / (1.0 - dropout_p)
    dxa = skinny(dy, lora_b, scaling)
    dx = matmul_lowrank(dy, weight, dxa, lora_a, None, keep_scale, seed, threshold) if need_dx else None
    d_a = tn_matmul(dxa, x, keep_scale, lora_a.dtype, seed, threshold)
    d_b = tn_matmul(dy, xa, scaling, lora_b.dtype)
    return dx, d_a, d_b

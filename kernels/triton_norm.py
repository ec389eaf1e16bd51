"""Triton RMSNorm over rows of a 2-D view: the forward keeps only 1/rms per row; the backward recomputes the
normalised rows and writes the weight gradient as one fp32 partial row per program, summed afterwards in a
fixed order, so it is deterministic."""
import torch
import triton
import triton.language as tl

from ._device import device_guard

_MAX_TILE = 8192  # elements (rows x padded hidden size) one program holds at a time
_MAX_ROWS_PER_TILE = 16
# The backward holds x, dy and the weight-gradient row per thread: at 16 warps ptxas caps it at 64 registers and
# spills (bf16 H=2048 on sm_86, compiled by tests/kernels/gpu_compile.py); 8 warps give each thread room.
_FWD_MAX_WARPS, _BWD_MAX_WARPS = 16, 8
# Fixed, not the GPU's SM count, so the weight-gradient summation order depends on the shape alone.
_MAX_BACKWARD_PROGRAMS = 256


@triton.jit
def _rms_norm_fwd_kernel(x_ptr, w_ptr, y_ptr, rstd_ptr, n_rows, n_cols, x_row_stride, y_row_stride, eps, offset,
                         CAST_BEFORE_WEIGHT: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    cols = tl.arange(0, BLOCK_COLS)
    row_mask = rows < n_rows
    col_mask = cols < n_cols
    mask = row_mask[:, None] & col_mask[None, :]

    x = tl.load(x_ptr + rows[:, None] * x_row_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    rstd = tl.rsqrt(tl.sum(x * x, axis=1) / n_cols + eps)
    h = x * rstd[:, None]
    if CAST_BEFORE_WEIGHT:  # Llama rounds the normalised row to the input dtype before scaling it
        h = h.to(x_ptr.dtype.element_ty).to(tl.float32)
    scale = tl.load(w_ptr + cols, mask=col_mask, other=0.0).to(tl.float32) + offset
    y = h * scale[None, :]
    tl.store(y_ptr + rows[:, None] * y_row_stride + cols[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(rstd_ptr + rows, rstd, mask=row_mask)


@triton.jit
def _rms_norm_bwd_kernel(dy_ptr, x_ptr, w_ptr, rstd_ptr, dx_ptr, dw_partial_ptr, n_rows, n_cols,
                         dy_row_stride, x_row_stride, dx_row_stride, offset, tiles_per_program,
                         CAST_BEFORE_WEIGHT: tl.constexpr, WEIGHT_GRAD: tl.constexpr, BLOCK_ROWS: tl.constexpr,
                         BLOCK_COLS: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_COLS)
    col_mask = cols < n_cols
    scale = tl.load(w_ptr + cols, mask=col_mask, other=0.0).to(tl.float32) + offset
    dw_acc = tl.zeros([BLOCK_COLS], dtype=tl.float32)

    for i in range(tiles_per_program):
        rows = (pid * tiles_per_program + i) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
        row_mask = rows < n_rows
        mask = row_mask[:, None] & col_mask[None, :]
        x = tl.load(x_ptr + rows[:, None] * x_row_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + rows[:, None] * dy_row_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(rstd_ptr + rows, mask=row_mask, other=0.0)

        h = x * rstd[:, None]
        g = dy * scale[None, :]
        # d/dx of x * rstd(x) is rstd * (g - h * mean(g * h)); Llama's cast passes gradients straight through
        dx = rstd[:, None] * (g - h * (tl.sum(g * h, axis=1) / n_cols)[:, None])
        tl.store(dx_ptr + rows[:, None] * dx_row_stride + cols[None, :], dx.to(dx_ptr.dtype.element_ty), mask=mask)

        if WEIGHT_GRAD:
            if CAST_BEFORE_WEIGHT:
                h = h.to(x_ptr.dtype.element_ty).to(tl.float32)
            dw_acc += tl.sum(dy * h, axis=0)

    if WEIGHT_GRAD:
        tl.store(dw_partial_ptr + pid * n_cols + cols, dw_acc, mask=col_mask)


def _tiling(n_cols: int, max_warps: int):
    block_cols = triton.next_power_of_2(n_cols)
    block_rows = max(1, min(_MAX_ROWS_PER_TILE, _MAX_TILE // block_cols))
    num_warps = min(max_warps, max(1, block_rows * block_cols // 512))
    return block_rows, block_cols, num_warps


def rms_norm_forward(x, weight, eps: float, offset: float, cast_before_weight: bool, out_dtype: torch.dtype):
    """x[N, H] with unit column stride -> (y[N, H] in out_dtype, rstd[N] fp32)."""
    n_rows, n_cols = x.shape
    y = torch.empty((n_rows, n_cols), dtype=out_dtype, device=x.device)
    rstd = torch.empty(n_rows, dtype=torch.float32, device=x.device)
    block_rows, block_cols, num_warps = _tiling(n_cols, _FWD_MAX_WARPS)
    grid = (triton.cdiv(n_rows, block_rows),)
    with device_guard(x):
        _rms_norm_fwd_kernel[grid](x, weight, y, rstd, n_rows, n_cols, x.stride(0), y.stride(0), eps, offset,
                                   CAST_BEFORE_WEIGHT=cast_before_weight, BLOCK_ROWS=block_rows,
                                   BLOCK_COLS=block_cols, num_warps=num_warps)
    return y, rstd


def rms_norm_backward(dy, x, weight, rstd, offset: float, cast_before_weight: bool, weight_grad: bool):
    """dy[N, H], x[N, H] (unit column stride) -> (dx[N, H] in x's dtype, dweight[H] fp32, or None without
    weight_grad)."""
    n_rows, n_cols = x.shape
    dx = torch.empty((n_rows, n_cols), dtype=x.dtype, device=x.device)
    block_rows, block_cols, num_warps = _tiling(n_cols, _BWD_MAX_WARPS)
    n_tiles = triton.cdiv(n_rows, block_rows)
    tiles_per_program = max(1, triton.cdiv(n_tiles, _MAX_BACKWARD_PROGRAMS))
    n_programs = triton.cdiv(n_tiles, tiles_per_program)
    dw_partial = torch.empty((n_programs, n_cols), dtype=torch.float32, device=x.device) if weight_grad else None
    with device_guard(x):
        _rms_norm_bwd_kernel[(n_programs,)](dy, x, weight, rstd, dx, dx if dw_partial is None else dw_partial,
                                            n_rows, n_cols, dy.stride(0), x.stride(0), dx.stride(0), offset,
                                            tiles_per_program, CAST_BEFORE_WEIGHT=cast_before_weight,
                                            WEIGHT_GRAD=weight_grad, BLOCK_ROWS=block_rows,
                                            BLOCK_COLS=block_cols, num_warps=num_warps)
    return dx, None if dw_partial is None else dw_partial.sum(dim=0)

"""Triton cross-entropy over rows of logits: one program per row, an online logsumexp over blocks of the
vocabulary, then a second sweep that writes the softmax gradient (optionally into the logits buffer itself)."""
import torch
import triton
import triton.language as tl

from ._device import device_guard

# A Gemma-sized vocabulary (262,144) takes 32 blocks per sweep, at 16 warps 16 elements per thread: 16,384-wide
# blocks (or 8 warps) spilled registers at fp16/bf16 with softcapping on sm_80-sm_90 (tests/kernels/gpu_compile.py).
_MAX_BLOCK = 8192


@triton.jit
def _tanh(x):
    # Written with exp because tanh is only reachable through libdevice, which the interpreter cannot run;
    # exp(-2|x|) never overflows, so large logits saturate cleanly to +-1.
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def _ce_rows_kernel(logits_ptr, logits_row_stride, grad_ptr, grad_row_stride, labels_ptr, loss_ptr, scale_ptr,
                    n_cols, ignore_index, softcap,
                    HAS_SOFTCAP: tl.constexpr, WRITE_GRAD: tl.constexpr, HAS_SCALE: tl.constexpr,
                    BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_row = logits_ptr + row * logits_row_stride
    label = tl.load(labels_ptr + row)
    valid = label != ignore_index
    in_range = valid & (label >= 0) & (label < n_cols)
    cols = tl.arange(0, BLOCK)
    # Read before the first sweep: in place, the second sweep's stores overwrite this element, and only the
    # first sweep's cross-warp reductions (barriers) order every warp's read before any warp's write.
    z_label = tl.load(x_row + label, mask=in_range, other=0.0).to(tl.float32)
    if HAS_SOFTCAP:
        z_label = softcap * _tanh(z_label / softcap)

    m = -float("inf")
    d = 0.0
    for start in range(0, n_cols, BLOCK):
        mask = start + cols < n_cols
        z = tl.load(x_row + start + cols, mask=mask, other=0.0).to(tl.float32)
        if HAS_SOFTCAP:
            z = softcap * _tanh(z / softcap)
        z = tl.where(mask, z, -float("inf"))  # after the cap, which would map -inf padding to -softcap
        m_new = tl.maximum(m, tl.max(z, axis=0))
        d = d * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new), axis=0)
        m = m_new
    lse = m + tl.log(d)

    tl.store(loss_ptr + row, tl.where(valid, lse - z_label, 0.0))

    if WRITE_GRAD:
        scale = 1.0
        if HAS_SCALE:
            scale = tl.load(scale_ptr + row)
        g_row = grad_ptr + row * grad_row_stride
        for start in range(0, n_cols, BLOCK):
            mask = start + cols < n_cols
            z = tl.load(x_row + start + cols, mask=mask, other=0.0).to(tl.float32)
            cap_slope = 1.0
            if HAS_SOFTCAP:
                t = _tanh(z / softcap)
                z = softcap * t
                cap_slope = 1.0 - t * t
            g = (tl.exp(z - lse) - tl.where(start + cols == label, 1.0, 0.0)) * cap_slope
            # where, not a multiply by 0: an ignored row may hold non-finite logits
            g = tl.where(valid, g * scale, 0.0)
            tl.store(g_row + start + cols, g.to(grad_ptr.dtype.element_ty), mask=mask)


def ce_rows_triton(logits, labels, ignore_index: int, softcap, grad=None, row_scale=None):
    """Per-row losses (fp32, 0 at ignored rows) of logits[N, V] (unit column stride) against labels[N].

    With `grad` (a [N, V] buffer, which may be `logits` itself) also writes d loss_r / d logits_r, times
    row_scale[r] when given, and 0 on ignored rows.
    """
    n_rows, n_cols = logits.shape
    losses = torch.empty(n_rows, dtype=torch.float32, device=logits.device)
    if n_rows == 0:
        return losses
    block = min(triton.next_power_of_2(n_cols), _MAX_BLOCK)
    with device_guard(logits):
        _ce_rows_kernel[(n_rows,)](
            logits, logits.stride(0),
            logits if grad is None else grad, 0 if grad is None else grad.stride(0),
            labels.contiguous(), losses,
            losses if row_scale is None else row_scale.to(torch.float32).contiguous(),
            n_cols, ignore_index, 1.0 if softcap is None else float(softcap),
            HAS_SOFTCAP=softcap is not None, WRITE_GRAD=grad is not None, HAS_SCALE=row_scale is not None,
            BLOCK=block, num_warps=min(16, max(4, block // 512)),
        )
    return losses

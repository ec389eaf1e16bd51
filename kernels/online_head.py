"""A linear head's cross-entropy and hidden gradient on the CPU in one pass over the head, as flash attention passes
over keys.

For each block of the head's rows (upcast once if stored narrower) z = h @ W_block.T, then per row the running
maximum m, the sum s of exp(z - m) and the [rows, H] accumulator a = sum_v exp(z_v - m) W_v, the last two rescaled by
exp(m_old - m_new) when the maximum grows. At the end loss = m + log s - z_label and d loss / dh = a / s - W_label,
times each row's weight. These are the two matmuls per block that computing the logits and then contracting their
gradient with the head takes, but the head is read and upcast once instead of twice per chunk of rows, no
[rows, V] logits are held, and all rows share each GEMM. fp32 and the hidden gradient only: a trained head, a bias,
a row override or a softcap go the chunked way (linear_cross_entropy._chunked_pass).
"""
import torch

ROWS = 4096  # rows per pass: a [rows, H] accumulator and a [rows, block] logits block, ~27 MB at H = 640


def head_blocks(head, dtype, block_rows: int):
    """(v0, v1, head[v0:v1] in dtype) for blocks of block_rows rows of head[V, H]: a head stored narrower than the
    computation (bf16 storage of a fp32 run's frozen table) is upcast one block at a time, into one buffer."""
    n_vocab = head.shape[0]
    buffer = None if head.dtype == dtype else head.new_empty((min(n_vocab, block_rows), head.shape[1]), dtype=dtype)
    for v0 in range(0, n_vocab, block_rows):
        v1 = min(v0 + block_rows, n_vocab)
        yield v0, v1, head[v0:v1] if buffer is None else buffer[: v1 - v0].copy_(head[v0:v1])


def online_pass(h, weight, labels, ignore_index: int, row_scale, want_grad: bool, block_rows: int, rows=None):
    """(per-row fp32 losses, d sum_r(row_scale[r] * loss_r) / dh or None) for h[n, H] in fp32 against weight[V, H],
    `rows` rows at a time (default ROWS)."""
    losses = torch.empty(h.shape[0], dtype=torch.float32)
    grad_h = torch.empty_like(h) if want_grad else None
    step = rows or ROWS
    for s in range(0, h.shape[0], step):
        e = min(s + step, h.shape[0])
        scale = None if row_scale is None else row_scale[s:e]
        losses[s:e] = _rows(h[s:e], weight, labels[s:e], ignore_index, scale,
                            None if grad_h is None else grad_h[s:e], block_rows)
    return losses, grad_h


def _rows(h, weight, labels, ignore_index, row_scale, grad_out, block_rows):
    valid = labels != ignore_index
    target = torch.where(valid, labels, 0)
    peak = torch.full((h.shape[0], 1), float("-inf"))
    total = torch.zeros(h.shape[0], 1)
    block = h.new_empty(h.shape[0], min(weight.shape[0], block_rows))  # a GEMM output that stays in cache
    if grad_out is not None:
        grad_out.zero_()
    for v0, v1, head in head_blocks(weight, h.dtype, block_rows):
        z = torch.mm(h, head.t(), out=block[:, : v1 - v0])
        new_peak = torch.maximum(peak, z.amax(dim=1, keepdim=True))
        shrink = torch.exp(peak - new_peak)  # 0 on the first block (peak -inf)
        total.mul_(shrink)
        peak = new_peak
        z.sub_(peak).exp_()
        total.add_(z.sum(dim=1, keepdim=True))
        if grad_out is not None:
            grad_out.mul_(shrink).addmm_(z, head)
    w_label = weight.index_select(0, target).to(h.dtype)
    z_label = (h * w_label).sum(dim=1, keepdim=True)
    losses = torch.where(valid.unsqueeze(1), peak + total.log() - z_label, 0.0).squeeze(1)
    if grad_out is not None:
        row_weight = valid.to(h.dtype).unsqueeze(1)
        if row_scale is not None:
            row_weight = row_weight * row_scale.unsqueeze(1)
        grad_out.div_(total).sub_(w_label).mul_(row_weight)
    return losses

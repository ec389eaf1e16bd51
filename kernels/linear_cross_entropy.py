"""Cross-entropy of a linear head (hidden @ weight.T + bias) without ever holding the [N, V] logits.

Rows whose label is ignored are dropped before the matmul; the kept rows go through the head in chunks, and
each chunk's logits are turned in place into their gradient (Triton kernel or its PyTorch twin) and immediately
contracted into the hidden / weight / bias gradients. For the scalar reductions that happens in the forward and
backward only scales; for "none" the backward recomputes the chunks with the per-row grad_output folded in.

Under autocast the logits are computed in the autocast dtype, as F.linear would there (transformers' lm_head
under bf16 autocast gives bf16 logits, which the loss then reads in fp32), and so are the backward's products on
CUDA; the loss is fp32 and every gradient comes back in its input's dtype.
"""
import torch

from .cross_entropy import ce_rows, check_args, check_labels, chunk_bounds, loss_grad_scale, reduce_losses

# A chunk re-reads the whole head, so on a GPU chunks are as many rows as this many bytes of logits hold:
# 512 MiB, e.g. 1,024 rows of bf16 (512 of fp32) logits at V = 262,144, 2,093 rows of bf16 at V = 128,256.
# CPU chunks keep cross_entropy.CHUNK_ELEMENTS (measured best there).
GPU_CHUNK_BYTES = 512 << 20
# cuBLAS multiplies half operands straight into an fp32 output through addmm's out_dtype overload (torch >= 2.8).
_MIXED_DTYPE_ADDMM = "dtype_out" in torch.ops.aten.addmm.overloads()


def default_chunk_rows(n_vocab: int, logits_dtype: torch.dtype, device: torch.device):
    """Rows per chunk when the caller gives none: GPU_CHUNK_BYTES of logits on CUDA, CPU's default otherwise.
    Not a Triton launch size (the row kernel's tiles do not depend on it), so it follows the tensor's device."""
    if device.type != "cuda":
        return None
    return max(1, GPU_CHUNK_BYTES // (n_vocab * logits_dtype.itemsize))


def _add_matmul_(acc, a, b):
    """acc += a @ b into the fp32 accumulator, without an acc-sized temporary in the operands' dtype."""
    if a.dtype == acc.dtype:
        acc.addmm_(a, b)
    elif acc.is_cuda and _MIXED_DTYPE_ADDMM:
        torch.addmm(acc, a, b, out_dtype=acc.dtype, out=acc)
    else:  # no mixed-dtype GEMM here: upcast the operands, a chunk's worth (never [V, H])
        acc.addmm_(a.to(acc.dtype), b.to(acc.dtype))


def _chunked_pass(h, weight, bias, labels, ignore_index, softcap, chunk_size, row_scale, needs):
    """Losses of the kept rows h[n, H] and, for each True in needs (hidden, weight, bias), that gradient:
    d sum_r(row_scale[r] * loss_r) -- hidden in h's dtype, weight and bias accumulated in fp32.
    h, weight and bias already have the dtype the matmuls run in; autocast must not recast them."""
    need_h, need_w, need_b = needs
    n_rows, n_vocab = h.shape[0], weight.shape[0]
    losses = torch.empty(n_rows, dtype=torch.float32, device=h.device)
    grad_h = torch.empty_like(h) if need_h else None
    grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=h.device) if need_w else None
    grad_b = torch.zeros(n_vocab, dtype=torch.float32, device=h.device) if need_b else None
    want_grad = any(needs)
    rows = chunk_size or default_chunk_rows(n_vocab, h.dtype, h.device)
    # The CPU's bf16 GEMM is ~70x slower than its fp32 one for this long-K product (64 x 16,384 x 640 rows:
    # 9.5 s against 0.13 s, torch 2.13), so there grad_h contracts the chunk's gradient with an fp32 head.
    head_for_grad_h = weight if h.is_cuda or not need_h else weight.float()
    with torch.autocast(h.device.type, enabled=False):
        for s, e in chunk_bounds(n_rows, n_vocab, rows):
            h_chunk = h[s:e]
            logits = h_chunk @ weight.t() if bias is None else torch.addmm(bias, h_chunk, weight.t())
            scale = None if row_scale is None else row_scale[s:e]
            losses[s:e] = ce_rows(logits, labels[s:e], ignore_index, softcap,
                                  grad=logits if want_grad else None, row_scale=scale)
            if need_h:
                if head_for_grad_h.dtype == logits.dtype:
                    torch.mm(logits, head_for_grad_h, out=grad_h[s:e])
                else:
                    grad_h[s:e] = logits.float() @ head_for_grad_h
            if need_w:
                _add_matmul_(grad_w, logits.t(), h_chunk)
            if need_b:
                grad_b.add_(logits.sum(dim=0, dtype=torch.float32))
    return losses, grad_h, grad_w, grad_b


def _compute_dtype(hidden):
    """The dtype the head's matmuls run in: autocast's when it is on for hidden's device, else the inputs' own."""
    device_type = hidden.device.type
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, ignore_index, reduction, softcap, chunk_size, grad_enabled,
                compute_dtype):
        flat_labels = labels.reshape(-1)
        valid = flat_labels != ignore_index
        kept = valid.nonzero().squeeze(1)
        n_valid = valid.sum()
        ctx.hidden_shape, ctx.hidden_dtype = hidden.shape, hidden.dtype
        ctx.weight_dtype, ctx.bias_dtype = weight.dtype, None if bias is None else bias.dtype
        h = hidden.reshape(-1, hidden.shape[-1]).index_select(0, kept)
        if compute_dtype is not None:
            h, weight = h.to(compute_dtype), weight.to(compute_dtype)
            bias = None if bias is None else bias.to(compute_dtype)
        y = flat_labels.index_select(0, kept)
        needs = tuple(grad_enabled and need for need in ctx.needs_input_grad[:3])
        args = (ignore_index, softcap, chunk_size)
        ctx.reduction, ctx.args, ctx.needs = reduction, args, needs

        if reduction == "none":
            losses = _chunked_pass(h, weight, bias, y, *args, None, (False, False, False))[0]
            ctx.save_for_backward(kept, h, weight, bias, y)
            return losses.new_zeros(flat_labels.shape).index_copy_(0, kept, losses).view(labels.shape)
        losses, *grads = _chunked_pass(h, weight, bias, y, *args, None, needs)
        ctx.save_for_backward(kept, n_valid, *grads)
        return reduce_losses(losses, n_valid, reduction)

    @staticmethod
    def backward(ctx, grad_output):
        if ctx.reduction == "none":
            kept, h, weight, bias, y = ctx.saved_tensors
            row_scale = grad_output.reshape(-1).index_select(0, kept).to(torch.float32)
            _, grad_h, grad_w, grad_b = _chunked_pass(h, weight, bias, y, *ctx.args, row_scale, ctx.needs)
        else:
            kept, n_valid, grad_h, grad_w, grad_b = ctx.saved_tensors
            scale = loss_grad_scale(grad_output, n_valid, ctx.reduction)
            for grad in (grad_h, grad_w, grad_b):
                if grad is not None:
                    grad.mul_(scale)

        grad_hidden = grad_weight = grad_bias = None
        if grad_h is not None:
            n_rows = ctx.hidden_shape.numel() // ctx.hidden_shape[-1]
            rows = grad_h.new_zeros((n_rows, grad_h.shape[1]), dtype=ctx.hidden_dtype)
            grad_hidden = rows.index_copy_(0, kept, grad_h.to(ctx.hidden_dtype)).view(ctx.hidden_shape)
        if grad_w is not None:
            grad_weight = grad_w.to(ctx.weight_dtype)
        if grad_b is not None:
            grad_bias = grad_b.to(ctx.bias_dtype)
        return grad_hidden, grad_weight, grad_bias, None, None, None, None, None, None, None


def linear_cross_entropy(hidden, weight, labels, bias=None, ignore_index: int = -100, reduction: str = "mean",
                         softcap=None, chunk_size=None):
    """cross_entropy(hidden @ weight.T + bias, labels) without materialising the [N, V] logits.

    hidden[N, H] (or [..., H]), weight[V, H], bias[V] or None, labels[N] (or [...]) already aligned with the
    rows: no shift happens here. Rows labelled ignore_index are dropped before the matmul (this reads the
    number of kept rows on the host: one device sync); any other label outside [0, V) raises a ValueError.
    chunk_size: kept rows per chunk (default: GPU_CHUNK_BYTES of logits on CUDA, CHUNK_ELEMENTS logits on the
    CPU, so extra memory is about chunk_rows x V, never N x V).
    softcap and reduction as in cross_entropy: "mean" is 0 with zero gradients when every label is ignored;
    the loss is float32. Under autocast the matmuls run in its dtype (as F.linear's would) and the gradients
    come back in the inputs' dtypes. Weight and bias gradients are only computed when they require grad. With
    "mean"/"sum" the gradients are computed during the forward and backward can run once per forward.
    """
    check_args(reduction, softcap)
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r}; expected a positive number of rows or None")
    if labels.shape != hidden.shape[:-1]:
        raise ValueError(f"labels shape {tuple(labels.shape)} does not match hidden {tuple(hidden.shape)}")
    check_labels(labels, weight.shape[0], ignore_index, "linear_cross_entropy")
    # Inside forward, needs_input_grad ignores no_grad mode: pass it so evaluation skips the gradient matmuls.
    return _LinearCrossEntropy.apply(hidden, weight, bias, labels, ignore_index, reduction, softcap, chunk_size,
                                     torch.is_grad_enabled(), _compute_dtype(hidden))

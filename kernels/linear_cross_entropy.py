"""Cross-entropy of a linear head (hidden @ weight.T + bias) without ever holding the [N, V] logits.

Rows whose label is ignored are dropped before the matmul; the kept rows go through the head in chunks, and
each chunk's logits are turned in place into their gradient (Triton kernel or its PyTorch twin) and immediately
contracted into the hidden / weight / bias gradients. On the CPU an fp32 call that wants at most the hidden's
gradient takes one pass over the head instead, holding no logits (online_head.py). For the scalar reductions that
happens in the forward and backward only scales; for "none" the backward recomputes the chunks with the per-row
grad_output folded in.

A row override (token_ids, rows) computes as if weight[token_ids] were `rows`: those columns of each chunk's logits
come from `rows` and are spliced in before the loss, their gradient goes to `rows` (and none to weight's rows), so
trained embedding rows of a frozen tied head (PEFT's trainable tokens) never need a merged [V, H] copy of the head.

Under autocast the logits are computed in the autocast dtype, as F.linear would there (transformers' lm_head
under bf16 autocast gives bf16 logits, which the loss then reads in fp32), and so are the backward's products on
CUDA; the loss is fp32 and every gradient comes back in its input's dtype.
"""
import torch

from ._backend import use_triton
from .cross_entropy import (
    CHUNK_ELEMENTS,
    ce_rows,
    check_args,
    check_labels,
    chunk_bounds,
    loss_grad_scale,
    reduce_losses,
)
from .online_head import head_blocks, online_pass

# A chunk re-reads the whole head, so on a GPU chunks are as many rows as this many bytes of logits hold:
# 512 MiB, e.g. 1,024 rows of bf16 (512 of fp32) logits at V = 262,144, 2,093 rows of bf16 at V = 128,256.
GPU_CHUNK_BYTES = 512 << 20
# On the CPU a GEMM against the whole [V, H] head with few rows spends its time packing the head, not multiplying
# (2-core AMD EPYC, torch 2.13, V = 262,144, H = 640: 51 rows ran at 38 GFLOP/s against a 144 GFLOP/s peak). So
# there the head is multiplied in blocks of CPU_VOCAB_BLOCK of its rows, and a chunk holds at least
# CPU_MIN_CHUNK_ROWS rows (128 MiB of fp32 logits at that V instead of CHUNK_ELEMENTS' 64): 103-128 rows in 1,024-row
# blocks ran at 110-125 GFLOP/s, forward and input gradient alike.
CPU_VOCAB_BLOCK = 1024
CPU_MIN_CHUNK_ROWS = 128
# cuBLAS multiplies half operands straight into an fp32 output through addmm's out_dtype overload (torch >= 2.8).
_MIXED_DTYPE_ADDMM = "dtype_out" in torch.ops.aten.addmm.overloads()


def default_chunk_rows(n_vocab: int, logits_dtype: torch.dtype, device: torch.device):
    """Rows per chunk when the caller gives none: GPU_CHUNK_BYTES of logits on CUDA; None on the CPU, whose even
    chunks _chunked_pass bounds (CHUNK_ELEMENTS logits or CPU_MIN_CHUNK_ROWS rows, whichever is more).
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


def _chunk_logits(h_chunk, weight, bias):
    """h_chunk @ weight.T + bias: [rows, V] logits in h_chunk's dtype, on the CPU in blocks of the head's rows (see
    CPU_VOCAB_BLOCK). On CUDA weight and bias already have h_chunk's dtype."""
    if h_chunk.is_cuda:
        return h_chunk @ weight.t() if bias is None else torch.addmm(bias, h_chunk, weight.t())
    logits = h_chunk.new_empty(h_chunk.shape[0], weight.shape[0])
    block = h_chunk.new_empty(h_chunk.shape[0], min(weight.shape[0], CPU_VOCAB_BLOCK))  # a GEMM output that stays in cache
    for v0, v1, head in head_blocks(weight, h_chunk.dtype, CPU_VOCAB_BLOCK):
        out = block[:, : v1 - v0]
        if bias is None:
            torch.mm(h_chunk, head.t(), out=out)
        else:
            torch.addmm(bias[v0:v1], h_chunk, head.t(), out=out)
        logits[:, v0:v1] = out
    return logits


def blocked_linear(x, weight, bias=None):
    """F.linear(x, weight, bias) in x's dtype over a weight stored in a narrower one (a fp32 run's frozen LM head
    kept in bf16) without a [V, H] copy of it: on the CPU one block of its rows is upcast at a time. No autograd:
    for generation and evaluation."""
    if x.is_cuda:
        weight = weight.to(x.dtype)
    logits = _chunk_logits(x.reshape(-1, x.shape[-1]), weight, None if bias is None else bias.to(x.dtype))
    return logits.view(*x.shape[:-1], weight.shape[0])


def _times_head_(out, grad_logits, head):
    """out = grad_logits @ head for grad_logits[rows, V] and head[V, H] in out's dtype; on the CPU summed over
    blocks of the head's rows (see CPU_VOCAB_BLOCK), each upcast there if the head is stored narrower."""
    if grad_logits.is_cuda:
        return torch.mm(grad_logits, head, out=out)
    out.zero_()
    for v0, v1, block in head_blocks(head, out.dtype, CPU_VOCAB_BLOCK):
        out.addmm_(grad_logits[:, v0:v1], block)
    return out


def _grad_h_chunk_(out, grad_logits, head, dtype, grad_spliced=None, rows=None):
    """out = grad_logits @ head (+ grad_spliced @ rows), summed in dtype (rows already in it) and rounded into out
    once."""
    total = out if out.dtype == dtype else torch.empty_like(out, dtype=dtype)
    _times_head_(total, grad_logits.to(dtype), head)
    if rows is not None:
        total.addmm_(grad_spliced.to(dtype), rows)
    return out if total is out else out.copy_(total)


def _in_one_pass(h, bias, override, softcap, needs) -> bool:
    """Whether the CPU's one-pass head (online_head.py) computes this call: fp32, at most the hidden's gradient, no
    bias, row override or softcap. A CPU tensor sent to Triton (the interpreter) takes the chunked pass a GPU runs."""
    return (h.device.type == "cpu" and not use_triton(h) and h.dtype == torch.float32 and bias is None
            and override is None and softcap is None and not any(needs[1:]))


def _chunked_pass(h, weight, bias, override, labels, ignore_index, softcap, chunk_size, row_scale, needs):
    """Losses of the kept rows h[n, H] and, for each True in needs (hidden, weight, bias, override rows), that
    gradient: d sum_r(row_scale[r] * loss_r) -- hidden in h's dtype, the others accumulated in fp32.
    override: None or (token_ids[k], rows[k, H]) standing in for weight[token_ids].
    h, bias and rows already have the dtype the matmuls run in (autocast must not recast them); weight has it too or
    is stored narrower (upcast here: on CUDA once, on the CPU block by block)."""
    if _in_one_pass(h, bias, override, softcap, needs):
        return (*online_pass(h, weight, labels, ignore_index, row_scale, needs[0], CPU_VOCAB_BLOCK, chunk_size),
                None, None, None)
    need_h, need_w, need_b, need_rows = needs
    n_rows, n_vocab = h.shape[0], weight.shape[0]
    losses = torch.empty(n_rows, dtype=torch.float32, device=h.device)
    grad_h = torch.empty_like(h) if need_h else None
    grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=h.device) if need_w else None
    grad_b = torch.zeros(n_vocab, dtype=torch.float32, device=h.device) if need_b else None
    ids, rows = override if override is not None else (None, None)
    if h.is_cuda:
        weight = weight.to(h.dtype)
    grad_rows = torch.zeros(rows.shape, dtype=torch.float32, device=h.device) if need_rows else None
    want_grad = any(needs)
    chunk_rows = chunk_size or default_chunk_rows(n_vocab, h.dtype, h.device)
    max_elements = CHUNK_ELEMENTS if h.is_cuda else max(CHUNK_ELEMENTS, CPU_MIN_CHUNK_ROWS * n_vocab)
    # The CPU's bf16 GEMM is ~70x slower than its fp32 one for this long-K product (64 x 16,384 x 640 rows:
    # 9.5 s against 0.13 s, torch 2.13), so there grad_h contracts the chunk's gradient with an fp32 head.
    grad_h_dtype = h.dtype if h.is_cuda else torch.promote_types(h.dtype, torch.float32)
    rows_for_grad_h = None if rows is None else rows.to(grad_h_dtype)
    with torch.autocast(h.device.type, enabled=False):
        for s, e in chunk_bounds(n_rows, n_vocab, chunk_rows, max_elements):
            h_chunk = h[s:e]
            logits = _chunk_logits(h_chunk, weight, bias)
            if ids is not None:
                spliced = h_chunk @ rows.t() if bias is None else torch.addmm(bias[ids], h_chunk, rows.t())
                logits.index_copy_(1, ids, spliced)
            scale = None if row_scale is None else row_scale[s:e]
            losses[s:e] = ce_rows(logits, labels[s:e], ignore_index, softcap,
                                  grad=logits if want_grad else None, row_scale=scale)
            if need_b:
                grad_b.add_(logits.sum(dim=0, dtype=torch.float32))
            grad_spliced = None
            if ids is not None and want_grad:
                # the override's columns belong to `rows`: take them out of what flows into weight
                grad_spliced = logits.index_select(1, ids)
                logits.index_fill_(1, ids, 0)
                if need_rows:
                    _add_matmul_(grad_rows, grad_spliced.t(), h_chunk)
            if need_h:
                _grad_h_chunk_(grad_h[s:e], logits, weight, grad_h_dtype, grad_spliced, rows_for_grad_h)
            if need_w:
                _add_matmul_(grad_w, logits.t(), h_chunk)
            del logits  # else the next chunk's logits are allocated while this chunk's are still held
    return losses, grad_h, grad_w, grad_b, grad_rows


def _compute_dtype(hidden):
    """The dtype the head's matmuls run in: autocast's when it is on for hidden's device, else the inputs' own."""
    device_type = hidden.device.type
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, override_ids, override_rows, labels, ignore_index, reduction, softcap,
                chunk_size, grad_enabled, compute_dtype):
        flat_labels = labels.reshape(-1)
        valid = flat_labels != ignore_index
        kept = valid.nonzero().squeeze(1)
        n_valid = valid.sum()
        ctx.hidden_shape, ctx.hidden_dtype = hidden.shape, hidden.dtype
        ctx.dtypes = tuple(None if t is None else t.dtype for t in (weight, bias, override_rows))
        # autocast's dtype, else the wider of hidden's and weight's: a weight stored narrower (a fp32 run's frozen
        # head kept in bf16) is computed with in fp32, upcast chunk by chunk
        dtype = compute_dtype or torch.promote_types(hidden.dtype, weight.dtype)
        h = hidden.reshape(-1, hidden.shape[-1]).index_select(0, kept).to(dtype)
        if compute_dtype is not None:
            weight = weight.to(compute_dtype)
        bias = None if bias is None else bias.to(dtype)
        if override_rows is not None:  # in the dtype the head computes in, as PEFT's merged copy has them
            override_rows = override_rows.to(dtype)
        y = flat_labels.index_select(0, kept)
        needs = tuple(grad_enabled and ctx.needs_input_grad[i] for i in (0, 1, 2, 4))
        args = (ignore_index, softcap, chunk_size)
        ctx.reduction, ctx.args, ctx.needs = reduction, args, needs
        override = None if override_ids is None else (override_ids, override_rows)

        if reduction == "none":
            losses = _chunked_pass(h, weight, bias, override, y, *args, None, (False,) * 4)[0]
            ctx.save_for_backward(kept, h, weight, bias, override_ids, override_rows, y)
            return losses.new_zeros(flat_labels.shape).index_copy_(0, kept, losses).view(labels.shape)
        losses, *grads = _chunked_pass(h, weight, bias, override, y, *args, None, needs)
        ctx.save_for_backward(kept, n_valid, *grads)
        return reduce_losses(losses, n_valid, reduction)

    @staticmethod
    def backward(ctx, grad_output):
        if ctx.reduction == "none":
            kept, h, weight, bias, override_ids, override_rows, y = ctx.saved_tensors
            override = None if override_ids is None else (override_ids, override_rows)
            row_scale = grad_output.reshape(-1).index_select(0, kept).to(torch.float32)
            _, grad_h, *grads = _chunked_pass(h, weight, bias, override, y, *ctx.args, row_scale, ctx.needs)
        else:
            kept, n_valid, grad_h, *grads = ctx.saved_tensors
            scale = loss_grad_scale(grad_output, n_valid, ctx.reduction)
            for grad in (grad_h, *grads):
                if grad is not None:
                    grad.mul_(scale)

        grad_hidden = None
        if grad_h is not None:
            n_rows = ctx.hidden_shape.numel() // ctx.hidden_shape[-1]
            rows = grad_h.new_zeros((n_rows, grad_h.shape[1]), dtype=ctx.hidden_dtype)
            grad_hidden = rows.index_copy_(0, kept, grad_h.to(ctx.hidden_dtype)).view(ctx.hidden_shape)
        grad_weight, grad_bias, grad_rows = (None if g is None else g.to(d) for g, d in zip(grads, ctx.dtypes))
        return grad_hidden, grad_weight, grad_bias, None, grad_rows, None, None, None, None, None, None, None


def _check_override(row_override, weight):
    """(token_ids as int64 on weight's device, rows) from row_override, or a ValueError saying what is wrong."""
    if row_override is None:
        return None, None
    token_ids, rows = row_override
    token_ids = torch.as_tensor(token_ids, device=weight.device)
    n_vocab, hidden_size = weight.shape
    expected = f"[{token_ids.numel()}, {hidden_size}] (one row of the head's width per token id)"
    if token_ids.dim() != 1 or token_ids.is_floating_point():
        raise ValueError(f"row_override: token_ids must be a 1-D list of integer ids, got shape "
                         f"{tuple(token_ids.shape)} of {token_ids.dtype}")
    if rows.shape != (token_ids.numel(), hidden_size):
        raise ValueError(f"row_override: rows have shape {tuple(rows.shape)}; expected {expected}")
    if token_ids.numel() and not (0 <= int(token_ids.min()) and int(token_ids.max()) < n_vocab):
        raise ValueError(f"row_override: token ids must be in [0, {n_vocab}) (rows of the head), got "
                         f"{token_ids.min().item()}..{token_ids.max().item()}")
    if token_ids.unique().numel() != token_ids.numel():
        raise ValueError("row_override: token ids repeat; each row of the head can be overridden once")
    return token_ids.long(), rows


def linear_cross_entropy(hidden, weight, labels, bias=None, ignore_index: int = -100, reduction: str = "mean",
                         softcap=None, chunk_size=None, row_override=None):
    """cross_entropy(hidden @ weight.T + bias, labels) without materialising the [N, V] logits.

    hidden[N, H] (or [..., H]), weight[V, H], bias[V] or None, labels[N] (or [...]) already aligned with the
    rows: no shift happens here. Rows labelled ignore_index are dropped before the matmul (this reads the
    number of kept rows on the host: one device sync); any other label outside [0, V) raises a ValueError.
    chunk_size: kept rows per chunk (default: GPU_CHUNK_BYTES of logits on CUDA; on the CPU even chunks of at most
    CHUNK_ELEMENTS logits or CPU_MIN_CHUNK_ROWS rows, whichever is more), so extra memory is about chunk_rows x V,
    never N x V.
    softcap and reduction as in cross_entropy: "mean" is 0 with zero gradients when every label is ignored;
    the loss is float32. Under autocast the matmuls run in its dtype (as F.linear's would) and the gradients
    come back in the inputs' dtypes. Weight and bias gradients are only computed when they require grad. With
    "mean"/"sum" the gradients are computed during the forward and backward can run once per forward.
    row_override: (token_ids[k], rows[k, H]) computes with weight[token_ids] replaced by rows (distinct ids;
    bias unchanged); rows get their gradient, weight's rows at token_ids get none; no merged head is built.
    """
    check_args(reduction, softcap)
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r}; expected a positive number of rows or None")
    if labels.shape != hidden.shape[:-1]:
        raise ValueError(f"labels shape {tuple(labels.shape)} does not match hidden {tuple(hidden.shape)}")
    check_labels(labels, weight.shape[0], ignore_index, "linear_cross_entropy")
    override_ids, override_rows = _check_override(row_override, weight)
    # Inside forward, needs_input_grad ignores no_grad mode: pass it so evaluation skips the gradient matmuls.
    return _LinearCrossEntropy.apply(hidden, weight, bias, override_ids, override_rows, labels, ignore_index,
                                     reduction, softcap, chunk_size, torch.is_grad_enabled(), _compute_dtype(hidden))

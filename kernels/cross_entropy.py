"""Cross-entropy over logits[..., V] with ignore_index, Gemma 2 softcapping and a gradient computed in the forward.

The gradient is computed in the forward pass into one [N, V] buffer and scaled by grad_output in backward,
so the logits need not be kept nor swept again. The PyTorch path runs the same two-sweep algorithm as the
Triton kernel, on fp32 scratch copies of bounded row chunks.
"""
import torch

from . import triton_ce
from ._backend import use_triton

REDUCTIONS = ("mean", "sum", "none")
# Logits elements per row chunk (64 MiB in fp32): the working memory of the PyTorch path, and the default
# chunk of linear_cross_entropy. Fixed, so chunking (and summation order) depends on the shape alone.
CHUNK_ELEMENTS = 1 << 24


def chunk_bounds(n_rows: int, n_cols: int, rows=None, max_elements: int = CHUNK_ELEMENTS):
    """[start, end) row ranges: `rows` rows each, or by default even chunks of at most max_elements."""
    if rows is None:
        rows = max(1, max_elements // n_cols)
        n_chunks = -(-n_rows // rows)
        rows = -(-n_rows // max(1, n_chunks))
    return [(s, min(s + rows, n_rows)) for s in range(0, n_rows, max(1, rows))]


def _ce_chunk_torch_(z, labels, ignore_index: int, softcap, row_scale, want_grad: bool):
    """Per-row losses of the fp32 scratch z[rows, V]; with want_grad, z is overwritten by its gradient."""
    valid = labels != ignore_index
    target = torch.where(valid, labels, 0).unsqueeze(1)
    if softcap is not None:
        z.div_(softcap).tanh_()
        cap_slope = torch.square(z).neg_().add_(1.0) if want_grad else None
        z.mul_(softcap)
    peak = z.amax(dim=1, keepdim=True)
    z_label = z.gather(1, target)
    z.sub_(peak).exp_()
    total = z.sum(dim=1, keepdim=True)
    losses = torch.where(valid, (peak + total.log() - z_label).squeeze(1), 0.0)
    if want_grad:
        weight = valid.to(torch.float32).unsqueeze(1)
        if row_scale is not None:
            weight = weight * row_scale.unsqueeze(1)
        # (softmax - onehot) * weight with one sweep over the row: exp * (weight / total), then -weight at the label
        z.mul_(weight / total).scatter_add_(1, target, -weight)
        if softcap is not None:
            z.mul_(cap_slope)
    return losses


def ce_rows_torch(logits, labels, ignore_index: int, softcap, grad=None, row_scale=None):
    """PyTorch twin of triton_ce.ce_rows_triton (same contract), in row chunks of bounded fp32 scratch."""
    n_rows, n_cols = logits.shape
    losses = torch.empty(n_rows, dtype=torch.float32, device=logits.device)
    # An fp32 gradient buffer doubles as the scratch; otherwise each chunk gets an fp32 copy, cast back after.
    scratch_is_grad = grad is not None and grad.dtype == torch.float32
    for s, e in chunk_bounds(n_rows, n_cols):
        x = logits[s:e]
        if scratch_is_grad:
            z = x if grad is logits else grad[s:e].copy_(x)
        else:
            z = x.to(torch.float32, copy=True)
        scale = None if row_scale is None else row_scale[s:e].to(torch.float32)
        losses[s:e] = _ce_chunk_torch_(z, labels[s:e], ignore_index, softcap, scale, grad is not None)
        if grad is not None and not scratch_is_grad:
            grad[s:e].copy_(z)
    return losses


def ce_rows(logits, labels, ignore_index: int, softcap, grad=None, row_scale=None):
    """Per-row fp32 losses and optional gradient (see ce_rows_triton), on the backend use_triton picks."""
    impl = triton_ce.ce_rows_triton if use_triton(logits) else ce_rows_torch
    return impl(logits, labels, ignore_index, softcap, grad=grad, row_scale=row_scale)


def reduce_losses(losses, n_valid, reduction: str):
    """Sum or mean of per-row losses; the mean divides by a tensor count (no host sync), 0 when nothing counts."""
    if reduction == "none":
        return losses
    total = losses.sum()
    return total if reduction == "sum" else total / n_valid.clamp(min=1)


def loss_grad_scale(grad_output, n_valid, reduction: str):
    """What the per-row gradients computed in the forward get multiplied by in backward."""
    if reduction == "none":
        return grad_output.reshape(-1, 1).to(torch.float32)
    scale = grad_output.to(torch.float32)
    return scale / n_valid.clamp(min=1) if reduction == "mean" else scale


def check_labels(labels, n_classes: int, ignore_index: int, fn: str):
    """Refuse labels that are neither a class index nor ignore_index (F.cross_entropy refuses them too; the
    kernels would silently score them as logsumexp). One reduction and one host read of a bool per call."""
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= n_classes))
    if not bad.any():
        return
    where = tuple(bad.nonzero()[0].tolist())
    index = where[0] if len(where) == 1 else where
    raise ValueError(
        f"{fn}: labels[{index}] = {labels[where].item()} is not a class index in [0, {n_classes}) nor "
        f"ignore_index={ignore_index} ({int(bad.sum())} such labels). Labels must index the {n_classes} "
        f"classes (vocabulary rows); a tokenizer with more tokens than the model's head needs "
        f"model.resize_token_embeddings, and positions without a target must be set to ignore_index."
    )


def check_args(reduction: str, softcap):
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r}; expected one of {', '.join(REDUCTIONS)}")
    if softcap is not None and not softcap > 0:
        raise ValueError(f"softcap={softcap!r}; expected a positive number or None")


class _CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, labels, ignore_index, reduction, softcap, grad_enabled):
        rows = logits.reshape(-1, logits.shape[-1])
        if rows.stride(1) != 1:
            rows = rows.contiguous()
        flat_labels = labels.reshape(-1)
        want_grad = grad_enabled and ctx.needs_input_grad[0]
        grad = torch.empty_like(rows, memory_format=torch.contiguous_format) if want_grad else None
        losses = ce_rows(rows, flat_labels, ignore_index, softcap, grad=grad)
        n_valid = (flat_labels != ignore_index).sum()
        ctx.save_for_backward(grad, n_valid)
        ctx.reduction, ctx.shape = reduction, logits.shape
        out = reduce_losses(losses, n_valid, reduction)
        return out.view(labels.shape) if reduction == "none" else out

    @staticmethod
    def backward(ctx, grad_output):
        # In place: a second backward (retain_graph) is refused by autograd's saved-tensor version check.
        grad, n_valid = ctx.saved_tensors
        grad.mul_(loss_grad_scale(grad_output, n_valid, ctx.reduction))
        return grad.view(ctx.shape), None, None, None, None, None


def cross_entropy(logits, labels, ignore_index: int = -100, reduction: str = "mean", softcap=None):
    """Cross-entropy of logits[..., V] against integer labels[...], as torch.nn.functional.cross_entropy.

    softcap: Gemma 2 final-logit softcapping, logits -> softcap * tanh(logits / softcap) before the softmax.
    reduction: "mean" over non-ignored labels (0, with zero gradients, when every label is ignored),
    "sum", or "none" (per-label losses shaped like labels, 0 at ignored labels).
    The loss is float32 whatever the logits dtype (a "sum" over many tokens would overflow fp16); the
    gradient has the logits dtype. Its backward can run once per forward (the gradient is computed in the
    forward and scaled in place).
    """
    check_args(reduction, softcap)
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"labels shape {tuple(labels.shape)} does not match logits {tuple(logits.shape)}")
    check_labels(labels, logits.shape[-1], ignore_index, "cross_entropy")
    # Inside forward, needs_input_grad ignores no_grad mode: pass it so evaluation skips the gradient.
    return _CrossEntropy.apply(logits, labels, ignore_index, reduction, softcap, torch.is_grad_enabled())

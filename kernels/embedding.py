"""An embedding lookup in which some rows of the table are replaced, without ever copying the [V, H] table.

embedding(ids, weight, row_override=(token_ids, rows)) equals
F.embedding(ids, weight.index_copy(0, token_ids, rows)), what PEFT's trainable tokens compute on every forward
(a fresh 262,144 x 640 copy for Gemma 3, kept for the backward). Here the looked-up vectors of overridden ids are
taken from `rows` instead: the gradient reaches `rows` (and, if weight requires grad, every other row of weight),
and only [N] indices and the [N, H] output are ever allocated. PyTorch only: a gather is memory-bound and
F.embedding already runs at bandwidth, so a Triton twin would gain nothing.
"""
import torch
import torch.nn.functional as F

from .linear_cross_entropy import _check_override


def embedding(ids, weight, row_override=None, padding_idx=None):
    """F.embedding(ids, weight, padding_idx) with weight[token_ids] replaced by rows when row_override is given.

    row_override: (token_ids[k], rows[k, H]), distinct ids in [0, V); rows are cast to weight's dtype, as PEFT's
    merged copy has them. padding_idx: as F.embedding, that row (overridden or not) gets no gradient.
    """
    token_ids, rows = _check_override(row_override, weight)
    out = F.embedding(ids, weight, padding_idx)
    if token_ids is None or token_ids.numel() == 0:
        return out
    hits = ids.unsqueeze(-1) == token_ids  # [..., k]: k trained tokens, a handful
    overridden = hits.any(-1, keepdim=True)
    slot = hits.int().argmax(-1)  # which override row each id takes
    # Positions without an override read slot 0 too; torch.where sends them no gradient either way.
    spliced = F.embedding(slot, rows.to(weight.dtype), _slot_of(token_ids, padding_idx, len(weight)))
    return torch.where(overridden, spliced, out)


def _slot_of(token_ids, padding_idx, n_vocab):
    """The override row that holds padding_idx (it must get no gradient, as in F.embedding), or None."""
    if padding_idx is None:
        return None
    match = (token_ids == padding_idx % n_vocab).nonzero()  # F.embedding counts a negative index from the end
    return int(match[0, 0]) if match.numel() else None

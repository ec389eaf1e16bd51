"""fastft.kernels.embedding with a row override against F.embedding over the merged table
weight.index_copy(0, token_ids, rows), which PEFT's trainable tokens build on every forward: output, and the
gradients of rows (and of weight when it trains)."""
import pytest
import torch
import torch.nn.functional as F

from fastft.kernels import embedding
from tests.kernels.numerics import assert_rel_close
from tests.kernels.test_cross_entropy import loss_and_grads

VOCAB, HIDDEN = 97, 16
IDS = torch.tensor([40, 3, 96, 0])  # unsorted, both ends of the vocabulary
# A gather is exact; only the rows' gradient sums over positions, maybe in another order (CUDA's atomics).
TOL = {torch.float32: 1e-6, torch.bfloat16: 1e-2}


def _case(dtype, trainable_weight, seed=0):
    """ids [3, 29] in which a third of the positions are override ids (each one several times), weight, rows."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (3, 29), generator=gen)
    ids.view(-1)[::3] = IDS[torch.randint(0, len(IDS), (29,), generator=gen)]
    weight = torch.randn(VOCAB, HIDDEN, generator=gen).to(dtype).requires_grad_(trainable_weight)
    rows = torch.randn(len(IDS), HIDDEN, generator=gen).to(dtype).requires_grad_()
    return ids, weight, rows


def _compare(ids, weight, rows, padding_idx, dtype, token_ids=IDS):
    def ours(weight, rows):
        return embedding(ids, weight, row_override=(token_ids, rows), padding_idx=padding_idx)

    def merged(weight, rows):  # PEFT's trainable tokens: rows in the table's dtype, copied into the whole table
        return F.embedding(ids, weight.index_copy(0, torch.as_tensor(token_ids), rows.to(weight)), padding_idx)

    inputs = [weight, rows]
    names = ["out"] + [name for name, t in zip(["weight", "rows"], inputs) if t.requires_grad]
    outs, refs = loss_and_grads(ours, inputs), loss_and_grads(merged, inputs)
    for out, ref, name in zip(outs, refs, names, strict=True):
        assert_rel_close(out.float(), ref.float(), tol=TOL[dtype], name=name)
    return outs


@pytest.mark.parametrize("trainable_weight", [False, True])
@pytest.mark.parametrize("padding_idx", [None, 5, 0, -1])  # 0: an overridden row; -1: the last, also overridden
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matches_embedding_of_the_merged_table(dtype, padding_idx, trainable_weight):
    ids, weight, rows = _case(dtype, trainable_weight)
    ids[1, :4] = (padding_idx if padding_idx is not None else 7) % VOCAB
    out, *grads = _compare(ids, weight, rows, padding_idx, dtype)
    assert out.dtype == dtype
    grad_rows = grads[-1]
    assert grad_rows.abs().sum(-1).gt(0).sum() == len(IDS) - (padding_idx is not None and padding_idx % VOCAB in IDS)


def test_rows_are_cast_to_the_tables_dtype_and_get_their_own_dtype_gradient():
    """PEFT casts the trained rows to the table's dtype: fp32 rows over a bf16 table give a bf16 output."""
    ids, weight, _ = _case(torch.bfloat16, False)
    rows = torch.randn(len(IDS), HIDDEN, requires_grad=True)
    out, grad_rows = _compare(ids, weight, rows, None, torch.bfloat16)
    assert out.dtype == torch.bfloat16 and grad_rows.dtype == torch.float32


def test_no_override_or_an_empty_one_is_plain_embedding():
    ids, weight, rows = _case(torch.float32, True)
    assert torch.equal(embedding(ids, weight), F.embedding(ids, weight))
    _compare(ids, weight, rows[:0].detach(), None, torch.float32, token_ids=torch.tensor([], dtype=torch.long))


def test_ids_of_any_shape():
    ids, weight, rows = _case(torch.float32, False)
    _compare(ids.view(-1), weight, rows, None, torch.float32)
    _compare(ids.view(3, 1, 29), weight, rows, None, torch.float32)


@pytest.mark.parametrize("token_ids, n_rows, message", [
    ([3, 97], 2, r"row_override: token ids must be in \[0, 97\)"),
    ([3, 3], 2, "row_override: token ids repeat"),
    ([3, 4], 3, r"row_override: rows have shape \(3, 16\); expected \[2, 16\]"),
])
def test_bad_override_is_a_clear_error(token_ids, n_rows, message):
    ids, weight, _ = _case(torch.float32, False)
    with pytest.raises(ValueError, match=message):
        embedding(ids, weight, row_override=(token_ids, torch.zeros(n_rows, HIDDEN)))

"""Attention behind q_norm/k_norm and apply_rope (Gemma 3's layout) keeps the norms' rows (which the norms keep anyway)
instead of the rotated q and k, and rebuilds them in its backward: the same gradients bit for bit as keeping them,
one rotated q and one rotated k less; a rotated q changed in place before attention is saved as it is."""
import pytest
import torch
from torch.utils.checkpoint import checkpoint

from fastft.kernels import apply_rope, attention, rms_norm
from tests.saved_tensors import saved_storage_bytes

BATCH, SEQ, HEADS, KV_HEADS, DIM = 2, 19, 4, 2, 8


def _tables():
    gen = torch.Generator().manual_seed(1)
    norm_w = [torch.randn(DIM, generator=gen) * 0.1 for _ in range(2)]
    angles = torch.arange(SEQ)[:, None] * torch.rand(DIM // 2, generator=gen)
    angles = torch.cat((angles, angles), -1).expand(BATCH, SEQ, DIM)
    return norm_w, angles.cos(), angles.sin()


def _block(q_raw, k_raw, v, tables, cut_recipe=False, scale_q=False):
    """[B, T, H, D] projections -> q_norm / k_norm on their transposes -> apply_rope -> causal attention."""
    (q_w, k_w), cos, sin = tables
    q = rms_norm(q_raw.transpose(1, 2), q_w, 1e-6, offset=1.0)
    k = rms_norm(k_raw.transpose(1, 2), k_w, 1e-6, offset=1.0)
    q, k = apply_rope(q, k, cos, sin)
    if cut_recipe:  # copies carry no recipe: the keep-them path
        q, k = q.clone(), k.clone()
    if scale_q:
        q.mul_(0.5)
    out = attention(q, k, v.transpose(1, 2), is_causal=True)
    return (out * out).sum()


def _inputs(seed=3):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(BATCH, SEQ, heads, DIM, generator=gen).requires_grad_() for heads in (HEADS, KV_HEADS, KV_HEADS)]


def _grads(cut_recipe, wrap=None, scale_q=False):
    inputs, tables = _inputs(), _tables()
    fn = lambda *xs: _block(*xs, tables, cut_recipe, scale_q)  # noqa: E731
    loss = wrap(fn, *inputs) if wrap else fn(*inputs)
    return [loss, *torch.autograd.grad(loss, inputs)]


@pytest.mark.parametrize("wrap", [None, lambda fn, *xs: checkpoint(fn, *xs, use_reentrant=False)],
                         ids=["plain", "checkpointed"])
def test_rebuilt_q_and_k_give_identical_gradients(wrap):
    for a, b in zip(_grads(False, wrap), _grads(True), strict=True):
        assert torch.equal(a, b)


def test_rotated_q_and_k_are_not_kept():
    inputs, tables = _inputs(), _tables()
    saved = [saved_storage_bytes(lambda cut=cut: _block(*inputs, tables, cut), tables[0]) for cut in (False, True)]
    assert saved[1] - saved[0] == BATCH * SEQ * (HEADS + KV_HEADS) * DIM * 4


def test_a_rotated_q_changed_in_place_is_saved_as_changed():
    """The recipe would rebuild q before the change: attention keeps the changed q instead (the version counter)."""
    for a, b in zip(_grads(False, scale_q=True), _grads(True, scale_q=True), strict=True):
        assert torch.equal(a, b)

"""The CPU's one-pass head (online_head.py) against fp64 cross-entropy, and which calls take it."""
import importlib

import pytest
import torch

from fastft.kernels.online_head import online_pass
from tests.kernels.numerics import assert_rel_close

lce_mod = importlib.import_module("fastft.kernels.linear_cross_entropy")
linear_cross_entropy = lce_mod.linear_cross_entropy


def _reference(h, weight, labels, row_scale):
    """Per-row losses and d sum(row_scale * loss) / dh from fp64 logits."""
    h64 = h.double().requires_grad_(True)
    losses = torch.nn.functional.cross_entropy(h64 @ weight.double().t(), labels, reduction="none")
    (losses * row_scale.double()).sum().backward()
    return losses.detach(), h64.grad


@pytest.mark.parametrize("head_dtype", [torch.float32, torch.bfloat16], ids=["fp32-head", "bf16-stored-head"])
def test_one_pass_matches_fp64_when_the_row_maximum_moves_late(head_dtype):
    """Head rows grow with their index, so each row's largest logit sits in a late block: the running sums must be
    rescaled many times. 7-row blocks over V = 103 (a ragged last block), 3 rows per pass, an ignored row."""
    g = torch.Generator().manual_seed(0)
    n, hidden, vocab = 10, 24, 103
    h = torch.randn(n, hidden, generator=g)
    weight = (torch.randn(vocab, hidden, generator=g) * torch.linspace(0.1, 3.0, vocab)[:, None]).to(head_dtype)
    labels = torch.randint(0, vocab, (n,), generator=g)
    labels[4] = -100
    row_scale = torch.rand(n, generator=g) + 0.5
    losses, grad = online_pass(h, weight, labels, -100, row_scale, True, block_rows=7, rows=3)
    ref_losses, ref_grad = _reference(h, weight.float(), labels.masked_fill(labels == -100, 0), row_scale)
    ref_losses[4], ref_grad[4] = 0.0, 0.0
    assert_rel_close(losses, ref_losses, name="losses")
    assert_rel_close(grad, ref_grad, name="d loss / dh")


def test_fp32_cpu_calls_hold_no_logits_and_others_keep_the_chunked_pass(monkeypatch):
    """The chunked pass turns [rows, V] logits into their gradient with ce_rows; the one pass never calls it."""
    calls = []
    ce_rows = lce_mod.ce_rows
    monkeypatch.setattr(lce_mod, "ce_rows", lambda *a, **k: calls.append(a[0].shape) or ce_rows(*a, **k))
    g = torch.Generator().manual_seed(1)
    h = torch.randn(6, 16, generator=g, requires_grad=True)
    weight = torch.randn(50, 16, generator=g)
    labels = torch.randint(0, 50, (6,), generator=g)
    linear_cross_entropy(h, weight, labels).backward()
    assert calls == []
    linear_cross_entropy(h, weight, labels, bias=torch.zeros(50)).backward()  # a bias: the chunked pass
    assert calls == [(6, 50)]
    trained = weight.clone().requires_grad_(True)  # a trained head needs every logit's gradient
    linear_cross_entropy(h, trained, labels).backward()
    assert len(calls) == 2


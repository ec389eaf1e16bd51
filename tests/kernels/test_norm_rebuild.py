"""A LoRA projection behind an rms_norm keeps the norm's input (which the norm keeps anyway) instead of the norm's
output, and rebuilds the output in its backward: the same gradients bit for bit as keeping the output, one
[tokens, hidden] activation less; an input changed in place before backward is refused as autograd refuses it."""
import pytest
import torch
from torch.utils.checkpoint import checkpoint

from fastft.kernels import lora_linear, lora_mlp, rms_norm
from tests.saved_tensors import saved_storage_bytes

TOKENS, HIDDEN, OUT, RANK = 37, 24, 40, 4


def _weights(seed=0):
    gen = torch.Generator().manual_seed(seed)
    norm_w = torch.randn(HIDDEN, generator=gen) * 0.1
    base = torch.randn(OUT, HIDDEN, generator=gen) * 0.2
    lora_a = (torch.randn(RANK, HIDDEN, generator=gen) * 0.2).requires_grad_()
    lora_b = (torch.randn(OUT, RANK, generator=gen) * 0.2).requires_grad_()
    mlp = [(torch.randn(o, i, generator=gen) * 0.2, (torch.randn(RANK, i, generator=gen) * 0.2).requires_grad_(),
            (torch.randn(o, RANK, generator=gen) * 0.2).requires_grad_(), 1.5)
           for o, i in ((OUT, HIDDEN), (OUT, HIDDEN), (HIDDEN, OUT))]
    return norm_w, base, lora_a, lora_b, mlp


def _block(x, weights, cut_recipe: bool, mlp_recompute=False):
    """norm -> q/k-like pair of lora_linear and a lora_mlp on the same normed rows, as in a decoder layer.
    cut_recipe: hand the consumers a copy of the norm output (which carries no recipe): today's keep-the-output path."""
    norm_w, base, lora_a, lora_b, mlp = weights
    y = rms_norm(x, norm_w, 1e-6, offset=1.0)
    if cut_recipe:
        y = y.clone()
    q = lora_linear(y, base, lora_a, lora_b, 2.0)
    k = lora_linear(y, base, lora_a, lora_b, 0.5, dropout_p=0.25)
    m = lora_mlp(y, *mlp, activation="geglu", recompute=mlp_recompute)
    return (q * k).sum() + (m * m).sum()


def _grads(weights, cut_recipe, wrap=None, mlp_recompute=False, seed=3):
    norm_w, base, lora_a, lora_b, mlp = weights
    x = torch.randn(TOKENS, HIDDEN, generator=torch.Generator().manual_seed(seed)).requires_grad_()
    params = [x, lora_a, lora_b] + [t for _, a, b, _ in mlp for t in (a, b)]
    torch.manual_seed(11)  # the dropout seed
    fn = lambda x_: _block(x_, weights, cut_recipe, mlp_recompute)  # noqa: E731
    loss = wrap(fn, x) if wrap else fn(x)
    return [loss, *torch.autograd.grad(loss, params)]


@pytest.mark.parametrize("mlp_recompute", [False, True])
def test_rebuilt_input_gives_identical_gradients(mlp_recompute):
    weights = _weights()
    rebuilt = _grads(weights, cut_recipe=False, mlp_recompute=mlp_recompute)
    kept = _grads(weights, cut_recipe=True, mlp_recompute=mlp_recompute)
    for a, b in zip(rebuilt, kept, strict=True):
        assert torch.equal(a, b)


def test_under_activation_checkpointing_too():
    weights = _weights()
    wrap = lambda fn, x: checkpoint(fn, x, use_reentrant=False)  # noqa: E731
    for a, b in zip(_grads(weights, False, wrap), _grads(weights, True), strict=True):
        assert torch.equal(a, b)


def _saved_bytes(weights, cut_recipe) -> int:
    """Bytes of every non-parameter storage autograd keeps for the block's backward."""
    norm_w, base, lora_a, lora_b, mlp = weights
    params = [norm_w, base, lora_a, lora_b] + [t for p in mlp for t in p[:3]]
    x = torch.randn(TOKENS, HIDDEN).requires_grad_()
    return saved_storage_bytes(lambda: _block(x, weights, cut_recipe), params)


def test_the_norm_output_is_not_kept():
    weights = _weights()
    # keeping the output costs exactly one more [tokens, hidden] storage: the copy all three consumers share
    assert _saved_bytes(weights, True) - _saved_bytes(weights, False) == TOKENS * HIDDEN * 4


def test_a_norm_input_changed_in_place_before_backward_is_an_error():
    norm_w, base, lora_a, lora_b, _ = _weights()
    x = torch.randn(TOKENS, HIDDEN).requires_grad_()
    h = x * 1.0
    loss = lora_linear(rms_norm(h, norm_w, 1e-6, offset=1.0), base, lora_a, lora_b, 2.0).sum()
    h.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()

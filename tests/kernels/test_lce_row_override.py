"""linear_cross_entropy's row_override=(token_ids, rows) against F.linear + F.cross_entropy with the merged head
weight.index_copy(0, token_ids, rows) (PEFT's trainable tokens compute exactly that), on the PyTorch path and the
Triton path (interpreter): loss, and the gradients of hidden, rows, bias and a trainable weight."""
import pytest
import torch
import torch.nn.functional as F

from fastft.kernels import linear_cross_entropy
from tests.kernels.numerics import assert_rel_close
from tests.kernels.test_cross_entropy import IGNORE, SOFTCAP, assert_all_close, loss_and_grads, run_backend

VOCAB, HIDDEN = 211, 24
IDS = torch.tensor([5, 190, 17, 0, 210])  # unsorted, both ends of the vocabulary


def _case(n, dtype, seed, trainable_weight, bias):
    """hidden, weight, bias, rows and labels; a third of the labels are override ids, so their rows see the -1."""
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, HIDDEN, generator=gen).to(dtype).requires_grad_()
    weight = (torch.randn(VOCAB, HIDDEN, generator=gen) * 0.5).to(dtype).requires_grad_(trainable_weight)
    b = (torch.randn(VOCAB, generator=gen) * 0.5).to(dtype).requires_grad_() if bias else None
    rows = (torch.randn(len(IDS), HIDDEN, generator=gen) * 0.5).to(dtype).requires_grad_()
    labels = torch.randint(0, VOCAB, (n,), generator=gen)
    labels[::3] = IDS[torch.randint(0, len(IDS), (len(labels[::3]),), generator=gen)]
    labels[1::4] = IGNORE
    return hidden, weight, b, rows, labels


def _merged_reference(labels, reduction, softcap):
    def ref(hidden, weight, bias, rows):
        merged = weight.float().index_copy(0, IDS, rows.float())
        logits = F.linear(hidden.float(), merged, None if bias is None else bias.float())
        if softcap is not None:
            logits = softcap * torch.tanh(logits / softcap)
        return F.cross_entropy(logits, labels, ignore_index=IGNORE, reduction=reduction)
    return ref


def _ours(labels, reduction, softcap, chunk_size):
    def ours(hidden, weight, bias, rows):
        return linear_cross_entropy(hidden, weight, labels, bias, IGNORE, reduction, softcap, chunk_size,
                                    row_override=(IDS, rows))
    return ours


def _inputs_and_names(hidden, weight, bias, rows):
    """The inputs in call order, and the names of the outputs of loss_and_grads (grads of those requiring grad)."""
    inputs = [hidden, weight, bias, rows]
    names = ["loss"] + [name for name, t in zip(["hidden", "weight", "bias", "rows"], inputs)
                        if t is not None and t.requires_grad]
    return inputs, names


def _loss_and_grads(fn, inputs):
    """loss_and_grads for inputs that may hold None (no bias)."""
    present = [i for i, t in enumerate(inputs) if t is not None]

    def call(*tensors):
        full = list(inputs)
        for i, t in zip(present, tensors, strict=True):
            full[i] = t
        return fn(*full)
    return call, [inputs[i] for i in present]


@pytest.mark.parametrize("softcap", [None, SOFTCAP])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("trainable_weight, bias", [(False, False), (True, True)])
def test_fp32_both_paths_match_the_merged_head(monkeypatch, reduction, softcap, trainable_weight, bias):
    """chunk_size=7 splits the 22 kept rows unevenly; a trainable weight gets no gradient in the overridden rows."""
    *tensors, labels = _case(29, torch.float32, 31, trainable_weight, bias)
    inputs, names = _inputs_and_names(*tensors)
    ref_fn, present = _loss_and_grads(_merged_reference(labels, reduction, softcap), inputs)
    ours_fn, _ = _loss_and_grads(_ours(labels, reduction, softcap, chunk_size=7), inputs)
    ref = loss_and_grads(ref_fn, present)
    for backend in ("torch", "triton"):
        got = run_backend(monkeypatch, backend, ours_fn, present)
        assert_all_close(got, ref, torch.float32, names)
        if trainable_weight:
            assert torch.equal(got[names.index("weight")][IDS], torch.zeros(len(IDS), HIDDEN))


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_under_bf16_autocast(monkeypatch, backend):
    """fp32 inputs under CPU bf16 autocast (the QLoRA state): the overridden columns are computed in bf16 like the
    rest, as F.linear over the merged head is there; gradients come back in fp32."""
    hidden, weight, _, rows, labels = _case(37, torch.float32, 32, trainable_weight=False, bias=False)
    monkeypatch.setenv("FASTFT_KERNEL_BACKEND", backend)
    results = []
    for fn in (lambda h, r: F.cross_entropy(F.linear(h, weight.index_copy(0, IDS, r)), labels, ignore_index=IGNORE),
               lambda h, r: linear_cross_entropy(h, weight, labels, chunk_size=8, row_override=(IDS, r))):
        h, r = hidden.detach().clone().requires_grad_(), rows.detach().clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = fn(h, r)
        loss.backward()
        results.append([loss.detach(), h.grad, r.grad])
    for got, ref, name in zip(results[1], results[0], ["loss", "hidden", "rows"], strict=True):
        assert got.dtype == ref.dtype == torch.float32
        assert_rel_close(got, ref, torch.bfloat16, name=name)


def test_without_grad_no_gradient_work(monkeypatch):
    """Evaluation: the loss equals the merged head's and nothing is accumulated for rows."""
    hidden, weight, _, rows, labels = _case(13, torch.float32, 33, trainable_weight=False, bias=False)
    with torch.no_grad():
        loss = linear_cross_entropy(hidden, weight, labels, chunk_size=4, row_override=(IDS, rows))
        ref = _merged_reference(labels, "mean", None)(hidden, weight, None, rows)
    assert_rel_close(loss, ref)
    assert not loss.requires_grad


def test_refuses_bad_overrides():
    hidden, weight, _, rows, labels = _case(6, torch.float32, 34, trainable_weight=False, bias=False)

    def call(ids, r):
        return linear_cross_entropy(hidden, weight, labels, row_override=(ids, r))

    with pytest.raises(ValueError, match=r"row_override: rows have shape \(5, 23\); expected \[5, 24\]"):
        call(IDS, rows[:, :-1])
    with pytest.raises(ValueError, match=r"row_override: token ids must be in \[0, 211\) \(rows of the head\), "
                                         r"got 0\.\.211"):
        call(torch.tensor([5, 190, 17, 0, 211]), rows)
    with pytest.raises(ValueError, match="row_override: token ids repeat"):
        call(torch.tensor([5, 190, 17, 5, 210]), rows)
    with pytest.raises(ValueError, match="row_override: token_ids must be a 1-D list of integer ids"):
        call(IDS.float(), rows)

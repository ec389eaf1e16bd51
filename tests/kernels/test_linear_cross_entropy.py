"""linear_cross_entropy (Triton CE under the interpreter, and the PyTorch path) against
F.cross_entropy(hidden @ weight.T + bias, labels)."""
import importlib

import pytest
import torch
import torch.nn.functional as F

from tests.kernels.numerics import assert_as_accurate_as, assert_rel_close
from tests.kernels.test_cross_entropy import (IGNORE, SOFTCAP, assert_all_close, loss_and_grads, make_labels,
                                              reference_loss, run_backend, spy_on_row_kernels)

lce_mod = importlib.import_module("fastft.kernels.linear_cross_entropy")
ce_mod = importlib.import_module("fastft.kernels.cross_entropy")
linear_cross_entropy = lce_mod.linear_cross_entropy


def _head(n, hidden_size, vocab, dtype, seed, ignore_ratio=0.3, bias=True):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, hidden_size, generator=gen).to(dtype).requires_grad_()
    weight = (torch.randn(vocab, hidden_size, generator=gen) * 0.5).to(dtype).requires_grad_()
    b = (torch.randn(vocab, generator=gen) * 0.5).to(dtype).requires_grad_() if bias else None
    return hidden, weight, b, make_labels(n, vocab, ignore_ratio, gen)


def _reference(labels, reduction, softcap):
    def ref(hidden, weight, bias=None):
        logits = hidden.float() @ weight.float().T
        logits = logits if bias is None else logits + bias.float()
        return reference_loss(logits, labels, reduction, softcap)
    return ref


def _exact(labels, softcap):
    """The reference in fp64 throughout."""
    def exact(hidden, weight):
        logits = hidden @ weight.T
        logits = logits if softcap is None else softcap * torch.tanh(logits / softcap)
        return F.cross_entropy(logits, labels, ignore_index=IGNORE)
    return exact


def _ours(labels, reduction, softcap, chunk_size):
    def ours(hidden, weight, bias=None):
        return linear_cross_entropy(hidden, weight, labels, bias, IGNORE, reduction, softcap, chunk_size)
    return ours


NAMES = ["loss", "grad_hidden", "grad_weight", "grad_bias"]


@pytest.mark.parametrize("softcap", [None, SOFTCAP])
@pytest.mark.parametrize("ignore_ratio", [0.0, 0.9, 1.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_fp32_both_paths_match_torch(monkeypatch, reduction, ignore_ratio, softcap):
    """chunk_size=7 splits the kept rows (29 or 3) unevenly."""
    hidden, weight, bias, labels = _head(29, 24, 515, torch.float32, seed=11, ignore_ratio=ignore_ratio)
    inputs = [hidden, weight, bias]
    ref = loss_and_grads(_reference(labels, reduction, softcap), inputs)
    ours = _ours(labels, reduction, softcap, chunk_size=7)
    on_torch = run_backend(monkeypatch, "torch", ours, inputs)
    on_triton = run_backend(monkeypatch, "triton", ours, inputs)
    assert_all_close(on_torch, ref, torch.float32, NAMES)
    assert_all_close(on_triton, ref, torch.float32, NAMES)
    assert_all_close(on_triton, on_torch, torch.float32, NAMES)


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(monkeypatch, backend, dtype):
    """Half head against the fp32 reference on the same values; gradients come back in the input dtypes."""
    hidden, weight, bias, labels = _head(33, 40, 389, dtype, seed=12)
    inputs = [hidden, weight, bias]
    ref = loss_and_grads(_reference(labels, "mean", SOFTCAP), inputs)
    ours = run_backend(monkeypatch, backend, _ours(labels, "mean", SOFTCAP, chunk_size=10), inputs)
    assert ours[0].dtype == torch.float32 and all(g.dtype == dtype for g in ours[1:])
    assert_all_close(ours, ref, dtype, NAMES)


@pytest.mark.parametrize("softcap", [None, 30.0])
def test_gemma_sized_vocab_triton(monkeypatch, softcap):
    """grad_hidden sums 262,144 rows of the head in fp32: PyTorch's own fp32 result is ~1e-5 from the fp64 one
    (1.0e-5 to 1.8e-5 over seeds 13-15), in an order that moves with the BLAS build. So fastft and PyTorch fp32 are
    each held against fp64, fastft to fp32 tolerance or twice PyTorch's error (measured: at most 1.23x)."""
    hidden, weight, _, _ = _head(4, 8, 262_144, torch.float32, seed=13, bias=False)
    labels = torch.tensor([3, IGNORE, 262_143, 100_000])
    inputs = [hidden, weight]
    ref = loss_and_grads(_reference(labels, "mean", softcap), inputs)
    exact = loss_and_grads(_exact(labels, softcap), [t.detach().double().requires_grad_() for t in inputs])
    ours = run_backend(monkeypatch, "triton", _ours(labels, "mean", softcap, chunk_size=2), inputs)
    for out, ref_out, exact_out, name in zip(ours, ref, exact, NAMES[:3], strict=True):
        assert_as_accurate_as(out, ref_out, exact_out, name)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_leading_dims_strided_weight_default_chunks(monkeypatch, backend):
    """hidden[B, T, H] sliced as hidden[:, :-1] (the shifted causal-LM call), labels[B, T], a weight that is a
    transposed view, and the default chunking."""
    gen = torch.Generator().manual_seed(14)
    hidden = torch.randn(2, 8, 16, generator=gen)[:, :-1].requires_grad_()
    weight = torch.randn(16, 203, generator=gen).t().requires_grad_()
    labels = make_labels(14, 203, 0.4, gen).view(2, 7)
    ref_fn = _reference(labels.view(-1), "none", None)
    ref = loss_and_grads(lambda h, w: ref_fn(h.reshape(-1, 16), w).view(2, 7), [hidden, weight])
    ours = run_backend(monkeypatch, backend, _ours(labels, "none", None, chunk_size=None), [hidden, weight])
    assert_all_close(ours, ref, torch.float32, NAMES[:3])


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_frozen_head_skips_weight_gradient(monkeypatch, reduction):
    """A frozen (e.g. tied) LM head costs no grad_weight matmul; with grad it is accumulated once per chunk."""
    calls = []
    real = lce_mod._add_matmul_
    monkeypatch.setattr(lce_mod, "_add_matmul_", lambda *a: calls.append(1) or real(*a))
    hidden, weight, _, labels = _head(20, 8, 97, torch.float32, seed=15, ignore_ratio=0.0, bias=False)
    weight.requires_grad_(False)
    linear_cross_entropy(hidden, weight, labels, reduction=reduction, chunk_size=6).sum().backward()
    assert calls == [] and hidden.grad is not None
    weight.requires_grad_(True)
    with torch.no_grad():  # evaluation: no gradient work although the inputs require grad
        linear_cross_entropy(hidden, weight, labels, reduction=reduction, chunk_size=6)
    assert calls == []
    linear_cross_entropy(hidden, weight, labels, reduction=reduction, chunk_size=6).sum().backward()
    assert len(calls) == 4 and weight.grad is not None


def test_all_ignored_mean_is_zero_with_zero_grads(monkeypatch):
    for backend in ("torch", "triton"):
        monkeypatch.setenv("FASTFT_KERNEL_BACKEND", backend)
        hidden, weight, bias, _ = _head(6, 8, 50, torch.float32, seed=16)
        loss = linear_cross_entropy(hidden, weight, torch.full((6,), IGNORE), bias)
        loss.backward()
        assert loss.item() == 0.0
        for t in (hidden, weight, bias):
            assert torch.equal(t.grad, torch.zeros_like(t))


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_dispatch_follows_backend_env(monkeypatch, backend):
    calls = spy_on_row_kernels(monkeypatch, backend)
    hidden, weight, _, labels = _head(9, 8, 31, torch.float32, seed=17, ignore_ratio=0.0, bias=False)
    linear_cross_entropy(hidden, weight, labels, chunk_size=5)
    assert calls == [f"ce_rows_{backend}"] * 2


def test_chunk_bounds_are_set_by_shape():
    assert ce_mod.chunk_bounds(10, 50, 4) == [(0, 4), (4, 8), (8, 10)]
    vocab = 262_144
    bounds = ce_mod.chunk_bounds(410, vocab)
    assert bounds == ce_mod.chunk_bounds(410, vocab) and bounds[0][0] == 0 and bounds[-1][1] == 410
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert max(e - s for s, e in bounds) * vocab <= ce_mod.CHUNK_ELEMENTS
    assert ce_mod.chunk_bounds(0, vocab) == []


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_gpu_chunks_hold_at_least_512_rows_within_the_stated_bytes(dtype):
    """On CUDA each chunk re-reads the head: at Gemma's vocabulary a chunk is >= 512 rows and its logits stay
    within GPU_CHUNK_BYTES; CPU tensors keep the CPU default (None: CHUNK_ELEMENTS)."""
    for vocab in (128_256, 262_144):
        rows = lce_mod.default_chunk_rows(vocab, dtype, torch.device("cuda", 1))
        assert rows >= 512 and rows * vocab * dtype.itemsize <= lce_mod.GPU_CHUNK_BYTES
    assert lce_mod.default_chunk_rows(262_144, dtype, torch.device("cpu")) is None


def test_weight_gradient_accumulates_half_operands_in_fp32():
    """The fp32 accumulator takes bf16 operands (the autocast case) and adds their exact product to what it holds."""
    gen = torch.Generator().manual_seed(20)
    acc = torch.randn(97, 8, generator=gen)
    a, b = (torch.randn(shape, generator=gen).to(torch.bfloat16) for shape in ((97, 5), (5, 8)))
    expected = acc.double() + a.double() @ b.double()
    lce_mod._add_matmul_(acc, a, b)
    assert acc.dtype == torch.float32
    assert_rel_close(acc, expected)


def test_rejects_bad_arguments():
    hidden, weight, _, labels = _head(4, 8, 31, torch.float32, seed=18, bias=False)
    with pytest.raises(ValueError, match="chunk_size"):
        linear_cross_entropy(hidden, weight, labels, chunk_size=0)
    with pytest.raises(ValueError, match="labels shape"):
        linear_cross_entropy(hidden, weight, labels[:3])
    with pytest.raises(ValueError, match="reduction"):
        linear_cross_entropy(hidden, weight, labels, reduction="avg")


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_rejects_labels_outside_the_vocabulary(monkeypatch, backend):
    monkeypatch.setenv("FASTFT_KERNEL_BACKEND", backend)
    hidden, weight, _, labels = _head(4, 8, 31, torch.float32, seed=18, bias=False)
    labels[2] = 31
    with pytest.raises(ValueError, match=r"linear_cross_entropy: labels\[2\] = 31 is not a class index in \[0, 31\)"):
        linear_cross_entropy(hidden, weight, labels)
    labels[2] = -5
    with pytest.raises(ValueError, match=r"labels\[2\] = -5 .* nor ignore_index=-100"):
        linear_cross_entropy(hidden, weight, labels)


def test_single_row_chunks():
    """chunk_size=1: every kept row is its own chunk; the weight gradient is the sum over all of them."""
    hidden, weight, bias, labels = _head(11, 12, 64, torch.float32, seed=19)
    ref = loss_and_grads(_reference(labels, "sum", None), [hidden, weight, bias])
    ours = loss_and_grads(_ours(labels, "sum", None, chunk_size=1), [hidden, weight, bias])
    assert_all_close(ours, ref, torch.float32, NAMES)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_cpu_head_in_vocab_blocks(monkeypatch, reduction):
    """On the CPU the head is multiplied in blocks of its rows (CPU_VOCAB_BLOCK, here 64 so that V = 515 takes
    nine blocks, the last one partial), with a bias: the same loss and gradients as the whole-head reference."""
    hidden, weight, bias, labels = _head(37, 24, 515, torch.float32, seed=21)
    inputs = [hidden, weight, bias]
    ref = loss_and_grads(_reference(labels, reduction, SOFTCAP), inputs)
    monkeypatch.setattr(lce_mod, "CPU_VOCAB_BLOCK", 64)
    ours = run_backend(monkeypatch, "torch", _ours(labels, reduction, SOFTCAP, chunk_size=None), inputs)
    assert_all_close(ours, ref, torch.float32, NAMES)


@pytest.mark.parametrize("override", [False, True], ids=["plain", "row-override"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_head_stored_in_bf16_computes_as_its_fp32_copy(monkeypatch, reduction, override):
    """A fp32 run's frozen head stored in bf16 (frozen_bf16): loss and gradients bit for bit those of the same values
    held in fp32, the head upcast block by block (nine blocks of 64 rows at V = 515, the last partial)."""
    hidden, weight, bias, labels = _head(37, 24, 515, torch.float32, seed=23)
    narrow = weight.detach().bfloat16()
    rows = torch.randn(2, 24, generator=torch.Generator().manual_seed(5)).requires_grad_()
    ids = torch.tensor([3, 400])
    monkeypatch.setattr(lce_mod, "CPU_VOCAB_BLOCK", 64)

    def run(head):
        loss = linear_cross_entropy(hidden, head, labels, bias, IGNORE, reduction, SOFTCAP,
                                    row_override=(ids, rows) if override else None)
        inputs = (hidden, bias, rows) if override else (hidden, bias)
        return [loss.detach(), *torch.autograd.grad(loss.sum(), inputs)]

    stored, reference = run(narrow), run(narrow.float())
    assert len(stored) == 3 + override and all(torch.equal(a, b) for a, b in zip(stored, reference))


def test_blocked_linear_is_linear_over_the_upcast_weight(monkeypatch):
    monkeypatch.setattr(lce_mod, "CPU_VOCAB_BLOCK", 64)
    gen = torch.Generator().manual_seed(2)
    x, weight, bias = torch.randn(2, 3, 24, generator=gen), torch.randn(515, 24, generator=gen), torch.randn(515)
    narrow = weight.bfloat16()
    expected = F.linear(x, narrow.float(), bias)
    assert torch.allclose(lce_mod.blocked_linear(x, narrow, bias), expected, rtol=1e-5, atol=1e-5)
    assert lce_mod.blocked_linear(x, narrow).shape == (2, 3, 515)

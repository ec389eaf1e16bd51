"""cross_entropy (Triton under the interpreter, and the PyTorch path) against torch.nn.functional.cross_entropy."""
import importlib

import pytest
import torch
import torch.nn.functional as F

from tests.kernels.numerics import assert_rel_close, poison_

# importlib: once fastft.kernels re-exports the function, the attribute `fastft.kernels.cross_entropy` is the function
ce_mod = importlib.import_module("fastft.kernels.cross_entropy")
triton_ce = importlib.import_module("fastft.kernels.triton_ce")
cross_entropy = ce_mod.cross_entropy

IGNORE = -100
SOFTCAP = 4.0  # small enough that the cap bends logits of scale 3


def make_labels(n, vocab, ignore_ratio, gen):
    labels = torch.randint(0, vocab, (n,), generator=gen)
    labels[torch.randperm(n, generator=gen)[: round(ignore_ratio * n)]] = IGNORE
    return labels


def reference_loss(logits, labels, reduction, softcap):
    """F.cross_entropy on fp32 logits with the softcap applied in plain torch; an all-ignored mean is 0 by our docs."""
    logits = logits.float()
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    if reduction == "mean" and not (labels != IGNORE).any():
        return F.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="sum")
    return F.cross_entropy(logits, labels, ignore_index=IGNORE, reduction=reduction)


def grad_output_for(out, gen):
    """A random upstream gradient, so backward's scaling by grad_output is exercised."""
    return (torch.rand(out.shape, generator=gen) + 0.5).to(out.dtype)


def loss_and_grads(fn, inputs, grad_output_seed=7):
    """fn(*inputs) and the gradients of <fn(*inputs), g> for every input that requires grad."""
    out = fn(*inputs)
    g = grad_output_for(out, torch.Generator().manual_seed(grad_output_seed))
    wrt = [t for t in inputs if t.requires_grad]
    return [out.detach(), *torch.autograd.grad(out, wrt, g)]


def run_backend(monkeypatch, backend, fn, inputs):
    """fn on `backend` with every float buffer from torch.empty / empty_like NaN-filled: an unwritten element fails."""
    monkeypatch.setenv("FASTFT_KERNEL_BACKEND", backend)
    with monkeypatch.context() as patch:
        for name in ("empty", "empty_like"):
            real = getattr(torch, name)
            patch.setattr(torch, name, lambda *a, _real=real, **k: _poison_floats(_real(*a, **k)))
        return loss_and_grads(fn, [t.detach().requires_grad_(t.requires_grad) for t in inputs])


def _poison_floats(t):
    return poison_(t) if t.is_floating_point() else t


def assert_all_close(outs, refs, dtype, names):
    for out, ref, name in zip(outs, refs, names, strict=True):
        assert_rel_close(out.float(), ref.float(), dtype, name=name)


def _logits(shape, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen) * 3.0).to(dtype), gen


@pytest.mark.parametrize("softcap", [None, SOFTCAP])
@pytest.mark.parametrize("ignore_ratio", [0.0, 0.9, 1.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_fp32_both_paths_match_torch(monkeypatch, reduction, ignore_ratio, softcap):
    logits, gen = _logits((37, 1003), torch.float32, seed=1)
    labels = make_labels(37, 1003, ignore_ratio, gen)
    fn = lambda x: cross_entropy(x, labels, IGNORE, reduction, softcap)  # noqa: E731
    x = logits.requires_grad_()
    ref = loss_and_grads(lambda t: reference_loss(t, labels, reduction, softcap), [x])
    on_torch = run_backend(monkeypatch, "torch", fn, [x])
    on_triton = run_backend(monkeypatch, "triton", fn, [x])
    names = ["loss", "grad_logits"]
    assert_all_close(on_torch, ref, torch.float32, names)
    assert_all_close(on_triton, ref, torch.float32, names)
    assert_all_close(on_triton, on_torch, torch.float32, names)
    if reduction == "none":
        assert (on_triton[0][labels == IGNORE] == 0).all() and (on_torch[0][labels == IGNORE] == 0).all()


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(monkeypatch, backend, dtype):
    """Half logits against the fp32 reference on the same (rounded) values; gradient comes back in the input dtype."""
    logits, gen = _logits((2, 19, 517), dtype, seed=2)
    labels = make_labels(38, 517, 0.3, gen).view(2, 19)
    x = logits.requires_grad_()
    ref = loss_and_grads(lambda t: reference_loss(t.view(-1, 517), labels.view(-1), "mean", SOFTCAP), [x])
    ours = run_backend(monkeypatch, backend, lambda t: cross_entropy(t, labels, softcap=SOFTCAP), [x])
    assert ours[0].dtype == torch.float32 and ours[1].dtype == dtype
    assert_all_close(ours, ref, dtype, ["loss", "grad_logits"])


@pytest.mark.parametrize("softcap", [None, 30.0])
def test_gemma_sized_vocab_triton(monkeypatch, softcap):
    """V = 262,144 spans many blocks of the online logsumexp."""
    vocab = 262_144
    logits, gen = _logits((3, vocab), torch.float32, seed=3)
    labels = torch.tensor([5, IGNORE, vocab - 1])
    x = logits.requires_grad_()
    ref = loss_and_grads(lambda t: reference_loss(t, labels, "sum", softcap), [x])
    ours = run_backend(monkeypatch, "triton", lambda t: cross_entropy(t, labels, reduction="sum", softcap=softcap), [x])
    assert_all_close(ours, ref, torch.float32, ["loss", "grad_logits"])


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_non_contiguous_leading_dims(monkeypatch, backend):
    """logits[B, T, V] sliced out of a longer sequence (row stride != V), labels[B, T]."""
    full, gen = _logits((2, 9, 301), torch.float32, seed=4)
    logits = full[:, :-1]
    labels = make_labels(16, 301, 0.25, gen).view(2, 8)
    x = logits.requires_grad_()
    ref = loss_and_grads(lambda t: reference_loss(t.reshape(-1, 301), labels.view(-1), "none", None).view(2, 8), [x])
    ours = run_backend(monkeypatch, backend, lambda t: cross_entropy(t, labels, reduction="none"), [x])
    assert_all_close(ours, ref, torch.float32, ["loss", "grad_logits"])


@pytest.mark.parametrize("impl", ["torch", "triton"])
@pytest.mark.parametrize("in_place", [False, True])
def test_row_kernel_fills_poisoned_buffer(impl, in_place):
    """The row primitive with a per-row gradient scale writes every gradient element, into a new or the same buffer."""
    fn = {"torch": ce_mod.ce_rows_torch, "triton": triton_ce.ce_rows_triton}[impl]
    logits, gen = _logits((23, 777), torch.float32, seed=5)
    labels = make_labels(23, 777, 0.4, gen)
    row_scale = torch.rand(23, generator=gen) + 0.5
    x = logits.clone().requires_grad_()
    ref_loss = reference_loss(x, labels, "none", SOFTCAP)
    (ref_grad,) = torch.autograd.grad(ref_loss, x, row_scale)
    grad = logits if in_place else poison_(torch.empty_like(logits))
    losses = fn(logits, labels, IGNORE, SOFTCAP, grad=grad, row_scale=row_scale)
    assert_rel_close(losses, ref_loss.detach(), name="losses")
    assert_rel_close(grad, ref_grad, name="grad")


def test_all_ignored_mean_is_zero_with_zero_grad(monkeypatch):
    for backend in ("torch", "triton"):
        monkeypatch.setenv("FASTFT_KERNEL_BACKEND", backend)
        x = _logits((5, 33), torch.float32, seed=6)[0].requires_grad_()
        loss = cross_entropy(x, torch.full((5,), IGNORE))
        loss.backward()
        assert loss.item() == 0.0 and torch.equal(x.grad, torch.zeros_like(x))


def spy_on_row_kernels(monkeypatch, backend):
    """Select `backend` and record, in the returned list, which row implementation each call runs."""
    calls = []
    for mod, name in ((ce_mod, "ce_rows_torch"), (triton_ce, "ce_rows_triton")):
        real = getattr(mod, name)
        monkeypatch.setattr(mod, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    monkeypatch.setenv("FASTFT_KERNEL_BACKEND", backend)
    return calls


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_dispatch_follows_backend_env(monkeypatch, backend):
    calls = spy_on_row_kernels(monkeypatch, backend)
    cross_entropy(torch.randn(4, 10), torch.tensor([1, 2, 3, IGNORE]))
    assert calls == [f"ce_rows_{backend}"]


def test_no_gradient_buffer_under_no_grad(monkeypatch):
    grads = []
    real = ce_mod.ce_rows_torch
    spy = lambda *a, grad=None, **k: grads.append(grad) or real(*a, grad=grad, **k)  # noqa: E731
    monkeypatch.setattr(ce_mod, "ce_rows_torch", spy)
    x = torch.randn(4, 10, requires_grad=True)
    with torch.no_grad():
        cross_entropy(x, torch.tensor([1, 2, 3, 4]))
    cross_entropy(x, torch.tensor([1, 2, 3, 4]))
    assert grads[0] is None and grads[1] is not None


def test_second_backward_is_refused():
    """Backward scales the forward's gradient in place; autograd must refuse to reuse it, not return it scaled twice."""
    x = torch.randn(4, 10, requires_grad=True)
    loss = cross_entropy(x, torch.tensor([1, 2, 3, 4]))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_rejects_bad_arguments():
    x, labels = torch.randn(4, 10), torch.tensor([1, 2, 3, 4])
    with pytest.raises(ValueError, match="reduction"):
        cross_entropy(x, labels, reduction="avg")
    with pytest.raises(ValueError, match="softcap"):
        cross_entropy(x, labels, softcap=0.0)
    with pytest.raises(ValueError, match="labels shape"):
        cross_entropy(x, labels[:3])


def _memory_trace(monkeypatch):
    """Record, in program order, the element addresses of every interpreted load and store (masked-in lanes)."""
    from triton.runtime.interpreter import InterpreterBuilder
    trace = []
    real_load, real_store = InterpreterBuilder.create_masked_load, InterpreterBuilder.create_masked_store

    def load(self, ptrs, mask, *args):
        trace.append(("load", set(ptrs.data[mask.data].tolist())))
        return real_load(self, ptrs, mask, *args)

    def store(self, ptrs, value, mask, *args):
        trace.append(("store", set(ptrs.data[mask.data].tolist())))
        return real_store(self, ptrs, value, mask, *args)

    monkeypatch.setattr(InterpreterBuilder, "create_masked_load", load)
    monkeypatch.setattr(InterpreterBuilder, "create_masked_store", store)
    return trace


@pytest.mark.parametrize("softcap", [None, SOFTCAP])
def test_in_place_reads_label_logit_before_first_sweep(monkeypatch, softcap):
    """In place, the second sweep writes gradients over the logits. On a GPU, warps are ordered only by the first
    sweep's reductions (barriers), so the label's logit must be read before that sweep starts: read after it, a
    warp could see another warp's gradient there. The interpreter runs one program's operations in order on whole
    blocks, so a late read would still see the logit; what it can show is the order, which is checked here."""
    vocab, label = 300, 123
    logits, _ = _logits((1, vocab), torch.float32, seed=8)
    reference = reference_loss(logits, torch.tensor([label]), "none", softcap)
    trace = _memory_trace(monkeypatch)
    losses = triton_ce.ce_rows_triton(logits, torch.tensor([label]), IGNORE, softcap, grad=logits)
    assert_rel_close(losses, reference, name="losses")
    label_addr = logits.data_ptr() + label * logits.element_size()
    row = {logits.data_ptr() + i * logits.element_size() for i in range(vocab)}
    label_read = trace.index(("load", {label_addr}))
    first_sweep = next(i for i, (kind, addrs) in enumerate(trace) if kind == "load" and len(addrs & row) > 1)
    first_write = next(i for i, (kind, addrs) in enumerate(trace) if kind == "store" and addrs & row)
    assert label_read < first_sweep < first_write


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("bad", [10, 11, -1])
def test_rejects_labels_outside_the_vocabulary(monkeypatch, backend, bad):
    """F.cross_entropy refuses these too; unchecked, the kernels would score such a row as logsumexp."""
    monkeypatch.setenv("FASTFT_KERNEL_BACKEND", backend)
    labels = torch.tensor([[1, IGNORE], [bad, 3]])
    with pytest.raises(ValueError) as info:
        cross_entropy(torch.randn(2, 2, 10), labels)
    message = str(info.value)
    assert f"labels[(1, 0)] = {bad} is not a class index in [0, 10)" in message
    assert "ignore_index=-100" in message and "resize_token_embeddings" in message

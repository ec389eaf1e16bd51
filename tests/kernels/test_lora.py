"""lora_linear (Triton under the interpreter, and the PyTorch path) against PEFT's lora.Linear / QLoRA Linear4bit."""
import bitsandbytes as bnb
import peft
import pytest
import torch
from torch.func import functional_call

from fastft.kernels import lora, triton_lora
from tests.kernels.numerics import assert_rel_close

BACKENDS = ["triton_backend", "torch_backend"]
_U32 = 0xFFFFFFFF


def _mix32(h: torch.Tensor) -> torch.Tensor:
    """lowbias32 on int64 values < 2**32 (products wrap mod 2**64, whose low 32 bits are the uint32 product)."""
    h = h ^ (h >> 16)
    h = (h * triton_lora.HASH_MUL_1.value) & _U32
    h = h ^ (h >> 15)
    h = (h * triton_lora.HASH_MUL_2.value) & _U32
    return h ^ (h >> 16)


def triton_keep_mask(seed: int, p: float, n_rows: int, n_cols: int) -> torch.Tensor:
    """Reference for the Triton kernels' dropout: keep(r, c) from a hash of (seed, r * n_cols + c)."""
    index = torch.arange(n_rows, dtype=torch.int64)[:, None] * n_cols + torch.arange(n_cols, dtype=torch.int64)
    h = _mix32(_mix32(index & _U32) ^ seed)
    return (h >> (32 - triton_lora.KEEP_BITS)) >= triton_lora.dropout_threshold(p)
IN, OUT, RANK, ALPHA = 67, 45, 5, 7
LORA_KEYS = ("lora_A.default.weight", "lora_B.default.weight")


class _Holder(torch.nn.Module):
    def __init__(self, proj):
        super().__init__()
        self.proj = proj


def peft_layer(base: torch.nn.Module, target="proj", seed=0):
    """PEFT's LoRA wrapper around base (QLoRA's Linear4bit for a bnb layer), with a non-zero random lora_B."""
    holder = _Holder(base)
    holder.is_loaded_in_4bit = isinstance(base, bnb.nn.Linear4bit)
    model = peft.get_peft_model(holder, peft.LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=[target]))
    layer = model.base_model.model.proj
    torch.nn.init.normal_(layer.lora_B["default"].weight, generator=torch.Generator().manual_seed(seed))
    return layer


def forward_backward(fn, leaves, dy):
    """[fn(*leaves), d<fn, dy>/d leaf ...] on fresh leaf copies, so no two runs share .grad."""
    leaves = [t.detach().clone().requires_grad_() for t in leaves]
    y = fn(*leaves)
    return [y.detach()] + list(torch.autograd.grad(y, leaves, dy))


def assert_all_close(outs, refs, dtype, names):
    for out, ref, name in zip(outs, refs, names):
        assert_rel_close(out, ref, dtype, name=name)


def _inputs(dtype, tokens=(2, 7), seed=1):
    gen = torch.Generator().manual_seed(seed)
    # A transposed view: the kernels must accept non-contiguous x.
    x = torch.randn(*reversed(tokens), IN, generator=gen).transpose(0, 1).to(dtype)
    dy = torch.randn(*tokens, OUT, generator=gen).to(dtype)
    return x, dy


def _ours(layer, weight, dropout_p=0.0):
    scaling = layer.scaling["default"]
    return lambda x, a, b, bias=None: lora.lora_linear(x, weight, a, b, scaling, bias, dropout_p)


def _peft(layer):
    return lambda x, a, b, bias: functional_call(layer, {**dict(zip(LORA_KEYS, (a, b))), "base_layer.bias": bias}, (x,))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("tokens", [(2, 7), (3, 37)])
def test_fp32_matches_peft(backend, tokens, request):
    request.getfixturevalue(backend)
    layer = peft_layer(torch.nn.Linear(IN, OUT))
    x, dy = _inputs(torch.float32, tokens)
    leaves = [x, *(layer.get_parameter(k) for k in LORA_KEYS), layer.base_layer.bias]
    ref = forward_backward(_peft(layer), leaves, dy)
    out = forward_backward(_ours(layer, layer.base_layer.weight), leaves, dy)
    assert_all_close(out, ref, torch.float32, ["y", "dx", "dA", "dB", "dbias"])


def test_triton_matches_torch_path(monkeypatch):
    """Without dropout (the backends draw different masks; each is checked against its own below)."""
    layer = peft_layer(torch.nn.Linear(IN, OUT))
    x, dy = _inputs(torch.float32)
    leaves = [x, *(layer.get_parameter(k) for k in LORA_KEYS), layer.base_layer.bias]
    results = {}
    for backend in ("triton", "torch"):
        monkeypatch.setenv("FASTFT_KERNEL_BACKEND", backend)
        results[backend] = forward_backward(_ours(layer, layer.base_layer.weight), leaves, dy)
    assert_all_close(results["triton"], results["torch"], torch.float32, ["y", "dx", "dA", "dB", "dbias"])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("adapter_dtype", ["same", torch.float32])
def test_half_precision_against_fp32_reference(backend, dtype, adapter_dtype, request):
    """Half-precision inputs (adapters in that dtype, or fp32 as PEFT keeps them) vs PEFT in fp32 on the same values."""
    request.getfixturevalue(backend)
    layer = peft_layer(torch.nn.Linear(IN, OUT))
    adapter_dtype = dtype if adapter_dtype == "same" else adapter_dtype
    weight = layer.base_layer.weight.detach().to(dtype)
    layer.base_layer.weight.data = weight.float()
    x, dy = _inputs(dtype)
    a, b = (layer.get_parameter(k).to(adapter_dtype) for k in LORA_KEYS)
    bias = layer.base_layer.bias.to(dtype)
    ref = forward_backward(_peft(layer), [t.float() for t in (x, a, b, bias)], dy.float())
    out = forward_backward(_ours(layer, weight), [x, a, b, bias], dy)
    assert [t.dtype for t in out] == [dtype, dtype, adapter_dtype, adapter_dtype, dtype]
    assert_all_close(out, ref, dtype, ["y", "dx", "dA", "dB", "dbias"])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dropout_masks_only_the_lora_branch(backend, dtype, request):
    """Against x @ W.T + bias + s * ((x * keep / (1 - p)) @ A.T) @ B.T with the mask regenerated from the seed."""
    request.getfixturevalue(backend)
    p, layer = 0.3, peft_layer(torch.nn.Linear(IN, OUT))
    x, dy = _inputs(dtype)
    weight = layer.base_layer.weight.detach().to(dtype)
    leaves = [x, *(layer.get_parameter(k).to(dtype) for k in LORA_KEYS), layer.base_layer.bias.to(dtype)]
    torch.manual_seed(11)
    out = forward_backward(_ours(layer, weight, p), leaves, dy)
    torch.manual_seed(11)
    seed, rows = lora.draw_dropout_seed(), x.shape[0] * x.shape[1]
    if backend == "triton_backend":
        keep = triton_keep_mask(seed, p, rows, IN).view(x.shape)
    else:
        keep = lora.torch_keep_mask(seed, p, (rows, IN), x.device).view(x.shape)
    assert abs(keep.float().mean().item() - (1 - p)) < 0.06
    scaling = layer.scaling["default"]
    reference = lambda x, a, b, bias: x @ weight.float().T + bias + scaling * ((x * keep / (1 - p)) @ a.T) @ b.T
    ref = forward_backward(reference, [t.float() for t in leaves], dy.float())
    assert_all_close(out, ref, dtype, ["y", "dx", "dA", "dB", "dbias"])

    torch.manual_seed(11)
    assert torch.equal(forward_backward(_ours(layer, weight, p), leaves, dy)[0], out[0]), "same seed, same result"
    assert not torch.allclose(forward_backward(_ours(layer, weight, p), leaves, dy)[0], out[0]), "new seed, new mask"


def nf4_linear(in_features, out_features, bias, seed=0, dtype=torch.float32):
    """An NF4 base as transformers loads one: weight quantized from dtype, bitsandbytes computing in dtype."""
    torch.manual_seed(seed)
    linear = bnb.nn.Linear4bit(
        in_features, out_features, bias=bias, compute_dtype=dtype, compress_statistics=True, quant_type="nf4"
    )
    linear.weight.data = linear.weight.data.to(dtype)
    return linear.to("cpu")  # moving the Params4bit quantizes it


@pytest.mark.parametrize("backend", BACKENDS)
def test_nf4_weight_matches_peft_qlora(backend, request):
    request.getfixturevalue(backend)
    layer = peft_layer(nf4_linear(IN, OUT, bias=True))
    assert isinstance(layer, peft.tuners.lora.bnb.Linear4bit)
    x, dy = _inputs(torch.float32)
    bias = layer.base_layer.bias
    leaves = [x, *(layer.get_parameter(k) for k in LORA_KEYS)]
    peft_fn = lambda x, a, b: functional_call(layer, dict(zip(LORA_KEYS, (a, b))), (x,))
    ref = forward_backward(peft_fn, leaves, dy)
    ours = lambda x, a, b: lora.lora_linear(x, layer.base_layer.weight, a, b, layer.scaling["default"], bias)
    assert_all_close(forward_backward(ours, leaves, dy), ref, torch.float32, ["y", "dx", "dA", "dB"])


@pytest.mark.parametrize("quantized", [False, True])
def test_saves_no_output_or_dense_weight(quantized, triton_backend):
    """Backward keeps x, the [tokens, r] activation and the caller's own weight; no output, no dequantized copy."""
    base = nf4_linear(IN, OUT, bias=True) if quantized else torch.nn.Linear(IN, OUT).requires_grad_(False)
    a = torch.randn(RANK, IN, requires_grad=True)
    b = torch.randn(OUT, RANK, requires_grad=True)
    x = torch.randn(14, IN, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        lora.lora_linear(x, base.weight, a, b, 2.0, base.bias, dropout_p=0.1)
    inputs = {t.data_ptr() for t in (x, base.weight, a, b)}
    extra = [tuple(t.shape) for t in saved if t.data_ptr() not in inputs]
    assert extra == [(14, RANK)]


def test_dispatch(monkeypatch):
    """Each backend runs all of the low-rank path (the mask-fused dx update only with dropout), torch the base."""
    calls = []
    ops = {"triton": (triton_lora, ("skinny", "lowrank_add_", "tn_matmul")),
           "torch": (lora, ("_torch_skinny", "_torch_lowrank_add_", "_torch_tn"))}
    for module, names in ops.values():
        for name in names:
            original = getattr(module, name)
            monkeypatch.setattr(module, name, lambda *args, _f=original, _n=name: calls.append(_n) or _f(*args))
    x = torch.randn(3, IN, requires_grad=True)
    w, a, b = torch.randn(OUT, IN), torch.randn(RANK, IN), torch.randn(OUT, RANK, requires_grad=True)
    for backend, (_, (skinny, lowrank_add, tn)) in ops.items():
        monkeypatch.setenv("FASTFT_KERNEL_BACKEND", backend)
        for dropout_p, expected in ((0.0, [skinny, skinny, tn, tn]), (0.1, [skinny, skinny, lowrank_add, tn, tn])):
            calls.clear()
            lora.lora_linear(x, w, a, b, 0.5, dropout_p=dropout_p).sum().backward()
            assert calls == expected


def test_rejects_trainable_base_weight_and_bad_dropout():
    x, a, b = torch.randn(3, IN), torch.randn(RANK, IN), torch.randn(OUT, RANK)
    with pytest.raises(ValueError, match="frozen"):
        lora.lora_linear(x, torch.randn(OUT, IN, requires_grad=True), a, b, 1.0)
    with pytest.raises(ValueError, match="dropout_p"):
        lora.lora_linear(x, torch.randn(OUT, IN), a, b, 1.0, dropout_p=1.0)

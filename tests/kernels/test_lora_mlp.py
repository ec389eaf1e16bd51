"""lora_mlp against transformers' LlamaMLP (swiglu) and GemmaMLP (geglu, gelu_pytorch_tanh) wrapped by PEFT."""
import bitsandbytes.functional as bnb_functional
import peft
import pytest
import torch
from torch.func import functional_call
from transformers import GemmaConfig, LlamaConfig
from transformers.models.gemma.modeling_gemma import GemmaMLP
from transformers.models.llama.modeling_llama import LlamaMLP

from fastft.kernels import lora, triton_act, triton_lora
from tests.kernels.numerics import assert_rel_close
from tests.kernels import test_lora
from tests.kernels.test_lora import BACKENDS, assert_all_close, forward_backward, nf4_linear

HIDDEN, INTERMEDIATE, RANK = 67, 91, 5
PROJS = ("gate_proj", "up_proj", "down_proj")
LORA_KEYS = [f"{p}.lora_{ab}.default.weight" for p in PROJS for ab in "AB"]
GRAD_NAMES = ["y", "dx"] + [f"d{p}.{ab}" for p in PROJS for ab in "AB"]


def peft_mlp(activation: str, seed=0):
    torch.manual_seed(seed)
    # Attention sizes only have to pass the config's validation; the MLP never reads them.
    sizes = dict(hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, num_attention_heads=1, head_dim=16)
    if activation == "swiglu":
        mlp = LlamaMLP(LlamaConfig(**sizes, hidden_act="silu"))
    else:
        mlp = GemmaMLP(GemmaConfig(**sizes, hidden_act="gelu_pytorch_tanh"))
    model = peft.get_peft_model(mlp, peft.LoraConfig(r=RANK, lora_alpha=9, target_modules=list(PROJS)))
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param)
    return model.base_model.model


def _ours(mlp, activation, weights=None, recompute=False):
    """lora_mlp taking the six LoRA matrices as arguments; base weights from mlp unless given."""
    weights = weights or [getattr(mlp, p).base_layer.weight for p in PROJS]
    scalings = [getattr(mlp, p).scaling["default"] for p in PROJS]

    def run(x, *ab, dropout_p=0.0):
        bundles = [(w, ab[2 * i], ab[2 * i + 1], s) for i, (w, s) in enumerate(zip(weights, scalings))]
        return lora.lora_mlp(x, *bundles, activation=activation, dropout_p=dropout_p, recompute=recompute)

    return run


def _peft(mlp):
    return lambda x, *ab: functional_call(mlp, dict(zip(LORA_KEYS, ab)), (x,))


def _inputs(mlp, dtype, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(7, 2, HIDDEN, generator=gen).transpose(0, 1).to(dtype)
    dy = torch.randn(2, 7, HIDDEN, generator=gen).to(dtype)
    return x, dy, [mlp.get_parameter(k).detach().to(dtype) for k in LORA_KEYS]


# recompute: gate(x) and up(x) rebuilt in backward instead of kept (selective checkpointing)
RECOMPUTE = pytest.mark.parametrize("recompute", [False, True], ids=["keep", "recompute"])


@RECOMPUTE
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation", ["swiglu", "geglu"])
def test_fp32_matches_peft_mlp(backend, activation, recompute, request):
    request.getfixturevalue(backend)
    mlp = peft_mlp(activation)
    x, dy, ab = _inputs(mlp, torch.float32)
    ref = forward_backward(_peft(mlp), [x, *ab], dy)
    out = forward_backward(_ours(mlp, activation, recompute=recompute), [x, *ab], dy)
    assert_all_close(out, ref, torch.float32, GRAD_NAMES)


@RECOMPUTE
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_against_fp32_reference(backend, dtype, recompute, request):
    request.getfixturevalue(backend)
    mlp = peft_mlp("geglu")
    weights = []
    for proj in PROJS:
        base = getattr(mlp, proj).base_layer
        weights.append(base.weight.detach().to(dtype))
        base.weight.data = weights[-1].float()
    x, dy, ab = _inputs(mlp, dtype)
    ref = forward_backward(_peft(mlp), [t.float() for t in (x, *ab)], dy.float())
    out = forward_backward(_ours(mlp, "geglu", weights, recompute), [x, *ab], dy)
    assert_all_close(out, ref, dtype, GRAD_NAMES)


@RECOMPUTE
@pytest.mark.parametrize("backend", BACKENDS)
def test_nf4_weights_match_their_dequantized_copy(backend, recompute, request):
    request.getfixturevalue(backend)
    mlp = peft_mlp("swiglu")
    shapes = [(HIDDEN, INTERMEDIATE), (HIDDEN, INTERMEDIATE), (INTERMEDIATE, HIDDEN)]
    nf4 = [nf4_linear(i, o, bias=False, seed=s).weight for s, (i, o) in enumerate(shapes)]
    dense = [bnb_functional.dequantize_4bit(w.data, w.quant_state) for w in nf4]
    for proj, weight in zip(PROJS, dense):
        getattr(mlp, proj).base_layer.weight.data = weight
    x, dy, ab = _inputs(mlp, torch.float32)
    ref = forward_backward(_peft(mlp), [x, *ab], dy)
    out = forward_backward(_ours(mlp, "swiglu", nf4, recompute), [x, *ab], dy)
    assert_all_close(out, ref, torch.float32, GRAD_NAMES)


@pytest.mark.parametrize("recompute, kept", [(False, [(14, INTERMEDIATE)] * 2), (True, [])],
                         ids=["keep", "recompute"])
def test_saves_gate_and_up_but_not_their_product(triton_backend, recompute, kept):
    """Besides its inputs, the block keeps three [tokens, r] tensors, and gate(x) and up(x) unless it recomputes."""
    mlp = peft_mlp("swiglu")
    x, _, ab = _inputs(mlp, torch.float32)
    x = x.contiguous().requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        _ours(mlp, "swiglu", recompute=recompute)(x, *[t.requires_grad_() for t in ab])
    inputs = {t.data_ptr() for t in [x, *ab]} | {getattr(mlp, p).base_layer.weight.data_ptr() for p in PROJS}
    extra = sorted(tuple(t.shape) for t in saved if t.data_ptr() not in inputs)
    assert extra == [(14, RANK)] * 3 + kept


def test_dispatch(monkeypatch):
    mlp = peft_mlp("swiglu")
    x, dy, ab = _inputs(mlp, torch.float32)
    calls = []
    for module, name in ((triton_lora, "skinny"), (triton_act, "gated_forward"), (lora, "_torch_skinny")):
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *args, _f=original, _n=name: calls.append(_n) or _f(*args))
    for backend, expected in (("triton", {"skinny", "gated_forward"}), ("torch", {"_torch_skinny"})):
        monkeypatch.setenv("FASTFT_KERNEL_BACKEND", backend)
        calls.clear()
        out = forward_backward(_ours(mlp, "swiglu"), [x, *ab], dy)
        assert set(calls) == expected
        assert_rel_close(out[0], _peft(mlp)(x, *ab), name=f"{backend} y")


def test_rejects_unknown_activation():
    w, a, b = torch.randn(4, 4), torch.randn(2, 4), torch.randn(4, 2)
    with pytest.raises(ValueError, match="activation"):
        lora.lora_mlp(torch.randn(3, 4), (w, a, b, 1.0), (w, a, b, 1.0), (w, a, b, 1.0), activation="relu")


class _Mask(torch.nn.Module):
    """PEFT's lora_dropout with a given keep-mask: x * keep / (1 - p)."""

    def __init__(self, keep, p):
        super().__init__()
        self.keep, self.p = keep, p

    def forward(self, x):
        return x * self.keep.view(x.shape) / (1 - self.p)


@RECOMPUTE
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation", ["swiglu", "geglu"])
def test_dropout_matches_peft_with_the_kernels_masks(backend, activation, recompute, request):
    """PEFT's MLP whose three lora_dropout modules apply the masks regenerated from lora_mlp's seeds (drawn gate, up,
    down, one mask each: the Triton kernels' hash or the PyTorch path's generator); fp32 to 1e-5."""
    request.getfixturevalue(backend)
    p, mlp = 0.3, peft_mlp(activation)
    x, dy, ab = _inputs(mlp, torch.float32)
    torch.manual_seed(11)
    ours = _ours(mlp, activation, recompute=recompute)
    out = forward_backward(lambda x, *ab: ours(x, *ab, dropout_p=p), [x, *ab], dy)
    torch.manual_seed(11)
    rows = x.shape[0] * x.shape[1]
    for proj, width in zip(PROJS, (HIDDEN, HIDDEN, INTERMEDIATE), strict=True):
        seed = lora.draw_dropout_seed()
        if backend == "triton_backend":
            keep = test_lora.triton_keep_mask(seed, p, rows, width)
        else:
            keep = lora.torch_keep_mask(seed, p, (rows, width), x.device)
        getattr(mlp, proj).lora_dropout["default"] = _Mask(keep, p)
    assert_all_close(out, forward_backward(_peft(mlp), [x, *ab], dy), torch.float32, GRAD_NAMES)
    torch.manual_seed(11)
    again = forward_backward(lambda x, *ab: ours(x, *ab, dropout_p=p), [x, *ab], dy)
    assert torch.equal(again[0], out[0]), "same seed, same result"


@RECOMPUTE
@pytest.mark.parametrize("activation", ["swiglu", "geglu"])
def test_blocks_in_one_graph_share_the_workspace_and_match_peft(torch_backend, activation, recompute):
    """Two MLP blocks in sequence, then one backward through both, as a model's layers run: every forward and
    backward after the first writes its temporaries over the previous one's (CPU workspace), and a second pass with
    more tokens grows the buffer. Values and gradients still equal PEFT's."""
    mlp = peft_mlp(activation)
    x, _, ab = _inputs(mlp, torch.float32)
    ours, theirs = _ours(mlp, activation, recompute=recompute), _peft(mlp)

    def two_blocks(run):
        return lambda x, *ab: run(torch.tanh(run(x, *ab)), *ab)

    for tokens in (x, torch.cat([x, x.flip(1)], dim=1)):
        dy = torch.randn(tokens.shape[:-1] + (HIDDEN,), generator=torch.Generator().manual_seed(2))
        ref = forward_backward(two_blocks(theirs), [tokens, *ab], dy)
        assert_all_close(forward_backward(two_blocks(ours), [tokens, *ab], dy), ref, torch.float32, GRAD_NAMES)

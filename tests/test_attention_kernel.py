"""fastft.kernels.attention against torch's scaled_dot_product_attention with the same mask (fp32, forward and
every input gradient within 1e-5 relative), the key blocks it skips, what it saves for backward, and a patched tiny
Gemma 3 whose loss and LoRA gradients match the unpatched model's."""
import importlib

import pytest
import torch
import torch.nn.functional as F

from fastft.kernels import attention
from fastft.patching import apply_kernels
from tests.kernels.numerics import assert_rel_close
from tests.test_patch_models import prompt_masked_batch, tiny_peft
from tests.test_patch_parity import loss_and_grads

attention_module = importlib.import_module("fastft.kernels.attention")  # the module; the package exports the function
BLOCK = 32  # several query blocks at these small lengths


def causal_mask(rows: int, window: int | None = None) -> torch.Tensor:
    i = torch.arange(rows)
    open_ = i[:, None] >= i[None, :]
    return open_ if window is None else open_ & (i[:, None] - i[None, :] < window)


def right_padded(mask: torch.Tensor, lengths) -> torch.Tensor:
    """[L, L] mask -> [B, 1, L, L] with keys past each row's length closed, as fastft's collator pads."""
    keys = torch.arange(mask.shape[-1])[None, :] < torch.tensor(lengths)[:, None]
    return mask[None, None] & keys[:, None, None, :]


def qkv(batch, heads, kv_heads, rows, dim, seed=0):
    """q, k, v as transformers makes them: [B, L, H, D] projections viewed as [B, H, L, D]."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, rows, heads, dim, generator=g).transpose(1, 2)
    k = torch.randn(batch, rows, kv_heads, dim, generator=g).transpose(1, 2)
    v = torch.randn(batch, rows, kv_heads, dim, generator=g).transpose(1, 2)
    return [t.requires_grad_() for t in (q, k, v)]


def run(fn, tensors, grad):
    for t in tensors:
        t.grad = None
    out = fn(*tensors)
    out.backward(grad)
    return [out.detach()] + [t.grad.clone() for t in tensors]


L = 203  # not a multiple of the block
CASES = {
    "is_causal": dict(is_causal=True),
    "causal mask": dict(mask=causal_mask(L)),
    "sliding, window < L": dict(mask=causal_mask(L, 50)),
    "sliding, window > L": dict(mask=causal_mask(L, 300)),
    "sliding, right padded": dict(mask=right_padded(causal_mask(L, 50), [L, 120])),
    "causal, right padded": dict(mask=right_padded(causal_mask(L), [150, L])),
    "additive float mask": dict(mask=torch.zeros(L, L).masked_fill(~causal_mask(L, 70), float("-inf"))),
    "no mask": dict(),
}


@pytest.mark.parametrize("heads", [(4, 1), (4, 2), (4, 4)], ids=["gqa 4/1", "gqa 4/2", "mha"])
@pytest.mark.parametrize("case", CASES)
def test_matches_sdpa(case, heads):
    kwargs = CASES[case]
    mask, is_causal = kwargs.get("mask"), kwargs.get("is_causal", False)
    tensors = qkv(2, heads[0], heads[1], L, 16)
    grad = torch.randn(2, heads[0], L, 16, generator=torch.Generator().manual_seed(1))
    ours = run(lambda q, k, v: attention(q, k, v, mask, is_causal, scale=0.3, block=BLOCK), tensors, grad)
    ref = run(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=0.3,
                                                             enable_gqa=True), tensors, grad)
    for name, a, b in zip(("out", "dq", "dk", "dv"), ours, ref):
        assert_rel_close(a, b, name=f"{case} {name}")


def test_fully_masked_rows_match_sdpa():
    """Left padding closes every key of the first rows: a block of such rows keeps all keys, as sdpa sees them."""
    keys_open = torch.arange(L)[None, :] >= torch.tensor([0, 70])[:, None]
    mask = causal_mask(L)[None, None] & keys_open[:, None, None, :]
    tensors = qkv(2, 4, 1, L, 16)
    grad = torch.randn(2, 4, L, 16, generator=torch.Generator().manual_seed(1))
    ours = run(lambda q, k, v: attention(q, k, v, mask, block=BLOCK), tensors, grad)
    ref = run(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True), tensors, grad)
    for name, a, b in zip(("out", "dq", "dk", "dv"), ours, ref):
        assert_rel_close(a, b, name=name)


def test_the_smaller_block_serves_masks_it_skips_enough_more_of():
    """At Gemma 3 270M's 1,024 tokens: its 512-token sliding window (128-row blocks compute 17% fewer pairs than
    256-row ones) gets the smaller block; a causal mask (10% fewer) keeps BLOCK."""
    i = torch.arange(1024)
    causal = i[:, None] >= i[None, :]
    sliding = causal & (i[:, None] - i[None, :] < 512)
    for keep, block in ((sliding, attention_module.SMALL_BLOCK), (causal, attention_module.BLOCK)):
        spans = attention_module._cheaper_spans(keep)
        assert spans == attention_module.key_spans(keep, block)


def test_a_mask_is_prepared_once_for_every_layer_it_reaches(monkeypatch):
    """A model builds its mask once per forward and passes it to each layer: converted once, again after an
    in-place change, and forgotten when the mask is freed."""
    made = []
    additive = attention_module._additive
    monkeypatch.setattr(attention_module, "_additive", lambda *a: made.append(1) or additive(*a))
    mask = right_padded(causal_mask(L, 50), [L, 120])
    q, k, v = qkv(2, 4, 1, L, 16)
    first, second = (attention(q, k, v, mask, block=BLOCK) for _ in range(2))
    assert len(made) == 1 and torch.equal(first, second)
    mask[..., 0, 1] = True  # in place: a new version
    attention(q, k, v, mask, block=BLOCK)
    assert len(made) == 2
    mask_id = id(mask)
    del mask, first, second
    assert not [key for key in attention_module._PREPARED if key[0] == mask_id]


def test_spans_hold_every_open_key_and_skip_the_closed_blocks():
    keep = right_padded(causal_mask(L, 50), [L, 120]).flatten(0, 1).any(0)
    spans = attention_module.key_spans(keep, BLOCK)
    assert [r for span in spans for r in range(span[0], span[1])] == list(range(L))
    for r0, r1, k0, k1 in spans:
        inside = torch.zeros(L, dtype=torch.bool)
        inside[k0:k1] = True
        assert not (keep[r0:r1] & ~inside).any(), (r0, r1, k0, k1)  # no open key outside the span
        assert keep[r0:r1, k0].any() and keep[r0:r1, k1 - 1].any()  # and the span no wider than its open keys
    # a window of 50 past the first two blocks: each block needs at most 32 + 49 keys of 203
    assert max(k1 - k0 for _, _, k0, k1 in spans) == BLOCK + 49


def test_output_is_a_view_of_a_token_major_buffer():
    """transformers' .transpose(1, 2).contiguous() on the output then copies nothing."""
    out = attention(*qkv(2, 4, 1, L, 16), is_causal=True, block=BLOCK)
    assert out.shape == (2, 4, L, 16) and out.transpose(1, 2).is_contiguous()


def saved_storages(fn, tensors) -> dict:
    """{storage pointer: bytes} of every tensor autograd saves while fn runs."""
    saved = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*tensors)
    return saved


def test_saves_no_more_than_sdpa_and_kv_at_their_own_size():
    mask = right_padded(causal_mask(L, 50), [L, 120])
    q, k, v = qkv(2, 4, 1, L, 16)
    ours = saved_storages(lambda q, k, v: attention(q, k, v, mask, block=BLOCK), (q, k, v))
    # transformers' path: repeat_kv's expand views, then sdpa
    ref = saved_storages(lambda q, k, v: F.scaled_dot_product_attention(q, k.expand(2, 4, L, 16),
                                                                        v.expand(2, 4, L, 16), attn_mask=mask),
                         (q, k, v))
    assert sum(ours.values()) <= sum(ref.values()), (ours, ref)
    for t in (k, v):
        assert ours[t.untyped_storage().data_ptr()] == t.untyped_storage().nbytes()


def test_errors_name_the_shapes():
    q, k, v = qkv(1, 3, 2, 8, 4)
    with pytest.raises(ValueError, match="multiple of k's"):
        attention(q, k, v)
    q, k, v = qkv(1, 4, 2, 8, 4)
    with pytest.raises(ValueError, match="not both"):
        attention(q, k, v, causal_mask(8), is_causal=True)


class Calls:
    """Counts BlockAttention's forwards (it still runs)."""

    def __init__(self, monkeypatch):
        self.n, forward = 0, attention_module.BlockAttention.forward

        def counted(*args):
            self.n += 1
            return forward(*args)

        monkeypatch.setattr(attention_module.BlockAttention, "forward", staticmethod(counted))


def test_patched_gemma3_matches_unpatched(monkeypatch):
    """Sliding window 5 and a right-padded row; blocks of 4 rows so the kernel skips key blocks in the model."""
    monkeypatch.setattr(attention_module, "BLOCK", 4)
    calls = Calls(monkeypatch)
    model = tiny_peft("gemma3")
    batch = prompt_masked_batch(length=29, prompt=10)
    ref_loss, ref_grads = loss_and_grads(model, batch)
    assert calls.n == 0
    report = apply_kernels(model, {"lora": False, "mlp": False, "rms_norm": False, "rope": False, "loss": False})
    assert report.counts["attention"] == 2, report.lines()
    loss, grads = loss_and_grads(model, batch)
    assert calls.n == 2  # one call per layer: the forward of both layers ran here
    assert_rel_close(loss, ref_loss, name="loss")
    for name, grad in grads.items():
        assert_rel_close(grad, ref_grads[name], name=name)
    other = tiny_peft("gemma3")  # an unpatched model of the same family keeps transformers' sdpa
    loss_and_grads(other, batch)
    assert calls.n == 2


def test_eager_attention_is_left_to_transformers_without_a_fallback_line():
    """The tiny Gemma 2 runs eager attention (its softcapping): the kernel replaces sdpa only, and eager is that
    model's intended path, not a fallback."""
    report = apply_kernels(tiny_peft("gemma2"))
    assert report.counts["attention"] == 0 and not report.fallbacks, report.lines()
    assert not any("attention" in line for line in report.lines()[1:]), report.lines()

"""Attention on the CPU that computes only the key blocks a mask leaves open.

attention(q, k, v, mask, is_causal, scale) equals torch's scaled_dot_product_attention with the same arguments
(enable_gqa=True): torch's CPU flash kernel computes every query-key pair whatever the mask, but a causal or
sliding-window mask closes most of them. Here the queries run in blocks of `block` rows, and each block calls the
same CPU flash op only on the key range between the first and the last key any of its rows may see; keys outside
that range are masked for every row of the block, so they add exp(-inf) = 0 to the softmax and leave the result
unchanged. A block none of whose rows sees any key keeps the full key range, so fully masked rows come out as sdpa's.
Without a mask (is_causal or no masking at all) there is one call: the flash kernel skips causal blocks itself.

The output is one buffer laid out [B, L, H, D] and returned as its [B, H, L, D] view, so the usual
.transpose(1, 2).contiguous() before the output projection copies nothing and that projection's saved input
shares this function's saved output. k and v with fewer heads than q (grouped-query attention) are saved at their
own size. Saved for backward: q, k, v, the output, the logsumexp and the mask in additive form (as sdpa keeps a bool
mask), made once per mask object for all the layers a model hands it to; a q or k that apply_rope rotated from an
rms_norm output is saved as its recipe (rope.rope_recipe) and rebuilt in backward. The mask is not differentiated. CPU only; no dropout.
"""
import weakref

import torch

from .rope import rebuild_rope, rope_recipe

_FORWARD = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
_BACKWARD = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward
BLOCK = 256
# Halving the block skips more pairs but adds parallel regions; it paid where it skipped at least a seventh of the
# pairs: forward and backward of one Gemma 3 270M-shaped call (2 x 1,024 tokens) on the 2-core EPYC, median of 10,
# took 129 ms against 153 with its 512-token sliding window (17% fewer pairs) and 147 against 139 with a causal
# mask (10% fewer).
SMALL_BLOCK, SMALL_BLOCK_GAIN = 128, 1 / 7


def _open_keys(mask: torch.Tensor) -> torch.Tensor:
    """[..., L, S] mask -> [L, S] bool: which keys some batch row or head may see from each query."""
    keep = mask if mask.dtype == torch.bool else mask != float("-inf")
    return keep.flatten(0, -3).any(0) if keep.dim() > 2 else keep


def key_spans(keep: torch.Tensor, block: int) -> list[tuple[int, int, int, int]]:
    """(r0, r1, k0, k1) per query block: rows r0:r1 need only keys k0:k1 (all keys when no row sees any)."""
    rows, keys = keep.shape
    seen = keep.any(1)
    first = torch.where(seen, keep.byte().argmax(1), keys)
    last = torch.where(seen, keys - 1 - keep.flip(1).byte().argmax(1), -1)
    spans = []
    for r0 in range(0, rows, block):
        r1 = min(r0 + block, rows)
        k0, k1 = int(first[r0:r1].min()), int(last[r0:r1].max()) + 1
        spans.append((r0, r1, k0, k1) if k1 > k0 else (r0, r1, 0, keys))
    return spans


def _pairs(spans) -> int:
    return sum((r1 - r0) * (k1 - k0) for r0, r1, k0, k1 in spans)


def _cheaper_spans(keep: torch.Tensor) -> list[tuple[int, int, int, int]]:
    """BLOCK-row spans, or SMALL_BLOCK-row ones where they skip at least SMALL_BLOCK_GAIN of the pairs."""
    wide, narrow = key_spans(keep, BLOCK), key_spans(keep, SMALL_BLOCK)
    return narrow if _pairs(narrow) <= (1 - SMALL_BLOCK_GAIN) * _pairs(wide) else wide


def _additive(mask: torch.Tensor, dtype) -> torch.Tensor:
    """The mask in the form the flash op takes: additive in q's dtype, 4-D. Converted once per mask (_prepared), not
    per block: each op on a block is one more parallel region, and those cost most when other processes share the
    cores."""
    if mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=dtype).masked_fill_(~mask, float("-inf"))
    return mask.reshape((1,) * (4 - mask.dim()) + mask.shape)


def _heads(x: torch.Tensor, groups: int) -> torch.Tensor:
    """[B, Hk, S, D] -> [B, Hk * groups, S, D], query head h reading kv head h // groups (a view when Hk is 1)."""
    if groups == 1:
        return x
    b, hk, s, d = x.shape
    return x[:, :, None].expand(b, hk, groups, s, d).reshape(b, hk * groups, s, d)


# The masks a model builds once per forward and hands to every layer, each with its spans and additive form, until
# the mask is freed: converting a [B, 1, L, S] mask costs ~3 ms per layer, forward and backward.
_PREPARED: dict = {}


def _prepared(mask: torch.Tensor, rows: int, keys: int, dtype, block: int | None):
    """(spans, additive mask) for this caller's mask, computed once per mask object (and version, dtype, block)."""
    key = (id(mask), mask._version, rows, keys, dtype, block)
    if key not in _PREPARED:
        if not any(k[0] == id(mask) for k in _PREPARED):
            weakref.finalize(mask, _forget, id(mask))
        expanded = mask.expand(*mask.shape[:-2], rows, keys)  # a [.., 1, S] mask sliced by rows below
        keep = _open_keys(expanded)
        spans = key_spans(keep, block) if block else _cheaper_spans(keep)
        _PREPARED[key] = (spans, _additive(expanded, dtype))
    return _PREPARED[key]


def _forget(mask_id: int) -> None:
    for key in [k for k in _PREPARED if k[0] == mask_id]:
        del _PREPARED[key]


def _blocks(additive, spans):
    """(r0, r1, k0, k1, the block's additive mask or None) per query block."""
    for r0, r1, k0, k1 in spans:
        yield r0, r1, k0, k1, None if additive is None else additive[..., r0:r1, k0:k1]


def _to_save(t: torch.Tensor):
    """(tensors to save for q or k, params to rebuild it or None): a rotated norm output is saved as its recipe."""
    recipe = rope_recipe(t)
    return ((t,), None) if recipe is None else recipe


def _restored(saved, params) -> torch.Tensor:
    return saved[0] if params is None else rebuild_rope(saved, params)


class BlockAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, additive, is_causal, scale, spans):
        batch, heads, rows, _ = q.shape
        groups = heads // k.shape[1]
        out = q.new_empty(batch, rows, heads, v.shape[-1])
        lse = None
        for r0, r1, k0, k1, block_mask in _blocks(additive, spans):
            o, block_lse = _FORWARD(q[:, :, r0:r1], _heads(k[:, :, k0:k1], groups), _heads(v[:, :, k0:k1], groups),
                            is_causal=is_causal, attn_mask=block_mask, scale=scale)
            if lse is None:  # the op's accumulation dtype
                lse = torch.empty(batch, rows, heads, dtype=block_lse.dtype)
            out[:, r0:r1].copy_(o.transpose(1, 2))
            lse[:, r0:r1].copy_(block_lse.transpose(1, 2))
        (q_kept, q_params), (k_kept, k_params) = _to_save(q), _to_save(k)
        ctx.save_for_backward(*q_kept, *k_kept, v, out, lse, additive)
        ctx.config = (is_causal, scale, spans, len(q_kept), q_params, k_params)
        return out.transpose(1, 2)

    @staticmethod
    def backward(ctx, grad_out):
        is_causal, scale, spans, n_q, q_params, k_params = ctx.config
        *kept, v, out, lse, additive = ctx.saved_tensors
        q, k = _restored(kept[:n_q], q_params), _restored(kept[n_q:], k_params)
        batch, heads, rows, _ = q.shape
        kv_heads, keys = k.shape[1], k.shape[2]
        groups = heads // kv_heads
        grad_q = q.new_empty(batch, rows, heads, q.shape[-1]).transpose(1, 2)
        acc = torch.promote_types(k.dtype, torch.float32)  # blocks overlap in keys: sum them in fp32 at least
        grad_k = torch.zeros(batch, kv_heads, keys, k.shape[-1], dtype=acc)
        grad_v = torch.zeros(batch, kv_heads, keys, v.shape[-1], dtype=acc)
        for r0, r1, k0, k1, block_mask in _blocks(additive, spans):
            gq, gk, gv = _BACKWARD(grad_out[:, :, r0:r1], q[:, :, r0:r1], _heads(k[:, :, k0:k1], groups),
                                   _heads(v[:, :, k0:k1], groups), out[:, r0:r1].transpose(1, 2),
                                   lse[:, r0:r1].transpose(1, 2), 0.0, is_causal, attn_mask=block_mask, scale=scale)
            grad_q[:, :, r0:r1].copy_(gq)
            grad_k[:, :, k0:k1] += gk.unflatten(1, (kv_heads, groups)).sum(2)
            grad_v[:, :, k0:k1] += gv.unflatten(1, (kv_heads, groups)).sum(2)
        return grad_q, grad_k.to(k.dtype), grad_v.to(v.dtype), None, None, None, None


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
              is_causal: bool = False, scale: float | None = None, block: int | None = None) -> torch.Tensor:
    """scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=scale, enable_gqa=True)
    on CPU tensors, skipping the key blocks the mask closes for a whole block of `block` query rows (default BLOCK,
    or SMALL_BLOCK where that skips enough more).

    q [B, H, L, D], k/v [B, Hk, S, D] with H a multiple of Hk; mask broadcastable to [B, H, L, S], bool (True:
    attend) or additive in q's dtype; is_causal: row i sees keys 0..i (sdpa's top-left alignment), without a mask.
    Returns [B, H, L, Dv], the [B, H, L, Dv] view of a [B, L, H, Dv] buffer.
    """
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"attention: q, k, v must be [B, H, L, D], got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    if q.shape[1] % k.shape[1] or k.shape[:3] != v.shape[:3] or k.shape[0] != q.shape[0]:
        raise ValueError(f"attention: q {tuple(q.shape)} and k/v {tuple(k.shape)}, {tuple(v.shape)} need the same "
                         f"batch, k and v the same heads and length, and q's heads a multiple of k's")
    if mask is not None and is_causal:
        raise ValueError("attention: give a mask or is_causal=True, not both (as torch's sdpa)")
    if mask is not None and mask.dtype != torch.bool and mask.dtype != q.dtype:
        raise ValueError(f"attention: the mask must be bool or q's dtype {q.dtype}, got {mask.dtype}")
    if mask is None:  # one call: with is_causal the flash kernel skips the closed blocks itself
        return BlockAttention.apply(q, k, v, None, is_causal, scale, [(0, q.shape[2], 0, k.shape[2])])
    spans, additive = _prepared(mask, q.shape[2], k.shape[2], q.dtype, block)
    return BlockAttention.apply(q, k, v, additive, is_causal, scale, spans)

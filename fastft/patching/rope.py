"""Rotary embeddings through fastft.kernels.apply_rope, only inside patched attention modules.

Attention forwards call their modeling module's global apply_rotary_pos_emb. That global is replaced once by a
dispatcher that runs apply_rope only while a patched attention instance is running (a context variable its
forward sets) and transformers' function otherwise, so unpatched models of the same family in this process,
and other code importing the function, keep the original behaviour.
"""
import contextvars

from ..kernels import apply_rope
from .install import foreign_patch, install, ours, plain_forward

_IN_PATCHED_ATTENTION = contextvars.ContextVar("fastft_in_patched_attention", default=False)


def _default_layout(args, kwargs) -> bool:
    """apply_rope takes q/k as [B, H, T, D] with cos/sin [B, T, D], i.e. transformers' unsqueeze_dim=1."""
    return args in ((), (1,)) and kwargs in ({}, {"unsqueeze_dim": 1})


def _dispatcher(plain):
    def apply_rotary_pos_emb(q, k, cos, sin, *args, **kwargs):
        if _IN_PATCHED_ATTENTION.get() and _default_layout(args, kwargs):
            return apply_rope(q, k, cos, sin)
        return plain(q, k, cos, sin, *args, **kwargs)

    apply_rotary_pos_emb.fastft_plain = plain
    apply_rotary_pos_emb.__doc__ = plain.__doc__
    return apply_rotary_pos_emb


def install_dispatcher(modeling) -> None:
    current = modeling.apply_rotary_pos_emb
    if not hasattr(current, "fastft_plain"):
        modeling.apply_rotary_pos_emb = _dispatcher(current)


@ours
def attention_forward(self, *args, **kwargs):
    token = _IN_PATCHED_ATTENTION.set(True)
    try:
        return plain_forward(self, *args, **kwargs)
    finally:
        _IN_PATCHED_ATTENTION.reset(token)


def patch_rope(model, family, report) -> None:
    attention_cls = family.cls("Attention")
    targets = [(name, m) for name, m in model.named_modules() if type(m) is attention_cls]
    if targets:
        install_dispatcher(family.module())
    for name, module in targets:
        reason = foreign_patch(module)
        if reason:
            report.plain("rope", name, reason)
            continue
        install(module, attention_forward)
        report.patched("rope")

"""Attention of patched models through fastft.kernels.attention on the CPU: only the key blocks the mask leaves open.

transformers' attention modules look their attention function up in ALL_ATTENTION_FUNCTIONS at every call and pass
themselves as its first argument. The "sdpa" entry is replaced once by a dispatcher that runs fastft's attention
only for the modules patch_attention marked, on CPU tensors and in the cases it covers, and transformers' own
sdpa function otherwise (other models in this process, CUDA, dropout, softcapping, one-token decoding, a KV cache
longer than the queries, ...).
"""
import weakref

import torch

from ..kernels import attention
from ..models.families import text_config

_PATCHED = weakref.WeakSet()  # the attention modules the dispatcher serves


def _applies(module, query, key, attention_mask, dropout, kwargs) -> bool:
    if module not in _PATCHED or query.device.type != "cpu" or dropout:
        return False
    if kwargs.get("softcap") is not None or kwargs.get("output_attentions") or kwargs.get("position_bias") is not None:
        return False
    if query.shape[2] < 2 or key.shape[2] != query.shape[2] or torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    if attention_mask is not None and (attention_mask.requires_grad or attention_mask.dtype not in (torch.bool,
                                                                                                   query.dtype)):
        return False
    return query.shape[1] % key.shape[1] == 0


def _dispatcher(plain):
    def sdpa_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
                               **kwargs):
        if not _applies(module, query, key, attention_mask, dropout, kwargs):
            return plain(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                         is_causal=is_causal, **kwargs)
        # transformers' rule: is_causal only without a mask, from the call or else the module
        causal = attention_mask is None and (is_causal if is_causal is not None else getattr(module, "is_causal", True))
        out = attention(query, key, value, attention_mask, bool(causal), scaling)
        return out.transpose(1, 2), None  # [B, L, H, D], already contiguous: the caller's .contiguous() copies nothing

    sdpa_attention_forward.fastft_plain = plain
    sdpa_attention_forward.__doc__ = plain.__doc__
    return sdpa_attention_forward


def install_dispatcher() -> None:
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    current = ALL_ATTENTION_FUNCTIONS["sdpa"]
    if not hasattr(current, "fastft_plain"):
        ALL_ATTENTION_FUNCTIONS.register("sdpa", _dispatcher(current))


def _serves(model) -> bool:
    """Whether the model runs sdpa on the CPU, the one case the kernel is for. Elsewhere (eager attention, as Gemma 2
    defaults to; flash-attn; a GPU) transformers' own attention is the intended path, not a fallback to report.
    With CUDA present the trainer moves a model still on the CPU here to the GPU, so that counts as a GPU."""
    implementation = getattr(text_config(model.config), "_attn_implementation", None)
    on_cpu = next(model.parameters()).device.type == "cpu" and not torch.cuda.is_available()
    return implementation == "sdpa" and on_cpu


def patch_attention(model, family, report) -> None:
    if not _serves(model):
        return
    attention_cls = family.cls("Attention")
    for module in model.modules():
        if type(module) is not attention_cls:
            continue
        install_dispatcher()
        _PATCHED.add(module)
        report.patched("attention")

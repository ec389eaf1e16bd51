"""PEFT's trainable tokens on the input embedding (lora.train_tokens) through fastft.kernels.embedding.

PEFT's TrainableTokensLayer builds the whole table with the trained rows copied in on every forward and looks the
ids up in that copy (Gemma 3: 262,144 x 640, 671 MB in fp32, kept for the backward). The patched forward looks them
up in the frozen table and takes the trained ids' vectors from the trained rows, same values and gradients.
Like lora.py, whether a layer can take it is decided again at every call (merging, disabling or switching adapters
happens after patching); otherwise PEFT's own forward runs.
"""
import functools

import torch
from torch import nn

from ..kernels import embedding
from .install import foreign_patch, install, one_active_adapter, ours, plain_forward

KIND = "train_tokens"


@functools.lru_cache(maxsize=None)
def _layer_type():
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    return TrainableTokensLayer


def _wraps_embedding(module) -> bool:
    """A token layer on an input embedding; the tied LM head's (a Linear) is the loss's (row_override, loss.py)."""
    # PEFT looks up any nn.Embedding subclass with F.embedding (and its embed_scale), so the subclass may vary
    return isinstance(module, _layer_type()) and isinstance(module.get_base_layer(), nn.Embedding)


def trained_adapter(layer) -> tuple[str | None, str | None]:
    """(the one adapter whose rows the kernel splices in, None) or (None, why PEFT's own forward must run)."""
    base = layer.get_base_layer()
    if base.max_norm is not None or base.scale_grad_by_freq or base.sparse:
        return None, "max_norm, scale_grad_by_freq or sparse is set on the embedding"
    return one_active_adapter(layer, layer.token_indices, "the trained rows are merged into the table",
                              "token adapters (the kernel splices exactly one)")


@ours
def trained_tokens_forward(self, x, *args, **kwargs):
    adapter, reason = trained_adapter(self)
    if reason or args or kwargs:
        return plain_forward(self, x, *args, **kwargs)
    base = self.get_base_layer()
    ids = torch.tensor(self.token_indices[adapter], device=base.weight.device)
    out = embedding(x, base.weight, (ids, self.trainable_tokens_delta[adapter]), base.padding_idx)
    scale = self._get_embed_scale()  # Gemma's scaled embedding multiplies in its own forward, which PEFT bypasses
    return out if scale is None else out * scale.to(out.dtype)


def patch_trained_tokens(model, report) -> None:
    for name, module in model.named_modules():
        if not _wraps_embedding(module):
            continue
        reason = foreign_patch(module) or trained_adapter(module)[1]
        if reason:
            report.plain(KIND, name, reason)
            continue
        install(module, trained_tokens_forward)
        report.notes.append(f"{KIND}: embedding with the trained rows spliced in (no merged copy of the table) "
                            f"for {name.removeprefix('base_model.model.')}")

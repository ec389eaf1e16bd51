"""Frozen LoRA base weights stored in bf16 where that loses nothing, still computed in fp32.

A fp32 run of a bf16 checkpoint (Gemma 3 270M is one) holds every frozen weight as a fp32 copy of a bf16 value. The
kernels behind lora_linear and lora_mlp upcast their frozen weight to the compute dtype in forward and again in
backward, never keeping the copy, so a weight that equals its bf16 round trip can be stored in bf16 for half the
bytes with bit-identical results. Checked per weight: a fp32 checkpoint's weights stay fp32.

The other paths that multiply by such a weight keep computing in fp32: the base nn.Linear gets a forward that
upcasts (PEFT's own forward calls it when adapters are disabled, merged or given extra arguments), and PEFT's merge
first gives the layer its fp32 weight back, so a merged weight is the one a fp32 base would give.

The frozen embedding table (tied to the LM head or not) and a frozen LM head are stored the same way when every
module holding the weight is one whose computation is known here: the input embedding looks up then upcasts
(exact), and the head is read only by the prompt-masked loss (linear_cross_entropy upcasts it block by block) and
by generation (blocked_linear). A table that PEFT's trainable tokens wrap (lora.train_tokens) stays fp32: PEFT
merges its rows into the table in the table's dtype.
"""
import functools
import sys
import types

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels import blocked_linear
from ..runtime.heap import return_freed_pages
from .install import install, installed, ours
from .lora import kernel_adapter, lora_forward
from .loss import causal_lm_of
from .mlp import mlp_forward


@ours
def upcast_linear_forward(self, x):
    """nn.Linear's forward over a weight stored in a narrower dtype than x; without x's gradient (generation) with
    no upcast copy of the whole weight."""
    if torch.is_grad_enabled() and x.requires_grad:
        return F.linear(x, self.weight.to(x.dtype), self.bias)
    return blocked_linear(x, self.weight, self.bias)


@ours
def upcast_embedding_forward(self, ids):
    """The embedding's forward over a table stored in bf16, in fp32: the lookup, then an exact upcast (Gemma 3's
    embed_scale multiplies in fp32, as its fp32 forward does)."""
    out = F.embedding(ids, self.weight, self.padding_idx).float()
    scale = getattr(self, "embed_scale", None)
    return out if scale is None else out * scale.to(out.dtype)


def merge_in_fp32(self, *args, **kwargs):
    """PEFT's merge, into the fp32 weight: merging into bf16 storage would round the merged weight."""
    weight = self.get_base_layer().weight
    if weight.dtype == torch.bfloat16:
        weight.data = weight.data.float()
    return type(self).merge(self, *args, **kwargs)


def _served_layers(model) -> list:
    """The PEFT LoRA layers whose base weight fastft's lora_linear or lora_mlp reads, each once."""
    layers = {}
    for module in model.modules():
        patch = installed(module)
        if patch is lora_forward:
            layers[id(module)] = module
        elif patch is mlp_forward:  # its LoRA children are the gate, up and down projections
            layers.update((id(child), child) for child in module.children())
    return [layer for layer in layers.values() if kernel_adapter(layer)[0] is not None]


def _storable(layer, uses: dict) -> bool:
    """Whether the layer's base is a plain fp32 nn.Linear whose weight no other module holds (a tied head)."""
    base = layer.get_base_layer()
    weight = base.weight
    return (type(base) is nn.Linear and "forward" not in base.__dict__ and weight.dtype == torch.float32
            and uses[id(weight)] == 1)


def _known_embedding(module) -> bool:
    """An input embedding whose forward upcast_embedding_forward reproduces: nn.Embedding's, or Gemma 3's scaled one."""
    from transformers.models.gemma3.modeling_gemma3 import Gemma3TextScaledWordEmbedding

    return (type(module) in (nn.Embedding, Gemma3TextScaledWordEmbedding) and "forward" not in module.__dict__
            and module.max_norm is None and not module.sparse)


def _tables(model, report, uses: dict) -> list:
    """(weight, its patch) for the frozen fp32 embedding table and LM head that can be kept in bf16: each module
    holding the weight is the plain input embedding or a plain head read through the loss kernel."""
    lm = causal_lm_of(model)
    embed, head = lm.get_input_embeddings(), lm.get_output_embeddings()
    holders = {}
    if _known_embedding(embed):
        holders.setdefault(id(embed.weight), []).append(embed)
    if report.uses("loss") and type(head) is nn.Linear and "forward" not in head.__dict__:
        holders.setdefault(id(head.weight), []).append(head)
    tables = []
    for modules in holders.values():
        weight = modules[0].weight
        if weight.dtype == torch.float32 and not weight.requires_grad and uses[id(weight)] == len(modules):
            tables.append((weight, functools.partial(_patch_table_holders, modules)))
    return tables


def _patch_table_holders(modules) -> None:
    for module in modules:
        install(module, upcast_linear_forward if isinstance(module, nn.Linear) else upcast_embedding_forward)


def _lora_bases(model, uses: dict):
    """(base weight, its patch) for the LoRA layers fastft's kernels serve whose base can be stored."""
    for layer in _served_layers(model):
        if _storable(layer, uses):
            yield layer.get_base_layer().weight, functools.partial(_patch_lora_layer, layer)


def _patch_lora_layer(layer) -> None:
    install(layer.get_base_layer(), upcast_linear_forward)
    layer.merge = types.MethodType(merge_in_fp32, layer)


def _as_bf16(weight: torch.Tensor) -> torch.Tensor | None:
    """The fp32 `weight` as bf16 when every value is a bf16 value (the low 16 bits of each are zero: its bf16 round
    trip equals it), else None. Read through 16-bit views: no fp32-sized temporary."""
    halves = weight.detach().contiguous().view(torch.int16).view(*weight.shape[:-1], -1, 2)
    low, high = (0, 1) if sys.byteorder == "little" else (1, 0)
    if halves[..., low].any():
        return None
    return halves[..., high].contiguous().view(torch.bfloat16)


def _store(candidates) -> tuple[int, int, int]:
    """Keep each (weight, patch) candidate's weight in bf16 where that is exact, then patch its readers:
    (stored, not bf16-exact, bytes saved)."""
    stored = inexact = saved = 0
    for weight, patch in candidates:
        narrow = _as_bf16(weight)
        if narrow is None:
            inexact += 1
            continue
        saved += weight.numel() * (weight.element_size() - narrow.element_size())
        weight.data = narrow  # the fp32 storage is freed here (a tied table is one Parameter: both holders see it)
        patch()
        stored += 1
    return stored, inexact, saved


def store_frozen_bf16(model, report, dtype: torch.dtype) -> None:
    """In a run computing in fp32 (`dtype`), store the bf16-exact base weights of the LoRA layers fastft's kernels
    serve, and the frozen embedding table / LM head, in bf16; one line in `report`'s notes."""
    if dtype != torch.float32:
        return
    uses = {}
    for _, param in model.named_parameters(remove_duplicate=False):
        uses[id(param)] = uses.get(id(param), 0) + 1
    stored, inexact, saved = _store(_lora_bases(model, uses))
    tables, inexact_tables, table_saved = _store(_tables(model, report, uses))
    if stored or tables:
        return_freed_pages()  # else glibc keeps the freed fp32 copies as holes in its heap (Gemma 3 270M LoRA bases: 0.27 GiB)
    if stored or inexact or tables or inexact_tables:
        report.notes.append(
            f"frozen_bf16: {stored} LoRA base weights and {tables} embedding/LM-head tables kept in bf16 "
            f"({(saved + table_saved) / 2**30:.3f} GiB less), exact: computed in fp32; {inexact + inexact_tables} not "
            f"bf16-exact stay fp32"
        )

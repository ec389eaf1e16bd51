"""A training PEFT model seen merged for a while: generation inside a training run decodes as fast as `fastft eval`.

Unmerged, every decoding step pays the LoRA matmuls beside each projection and, for trained token rows
(lora.train_tokens), a copy of the whole embedding matrix (262,144 x 640 for Gemma 3). PEFT's unmerge subtracts
the LoRA product again, which does not give back the fp32 weights bit for bit, so training would drift. Here each
LoRA layer merges with safe_merge, into a fresh tensor, and leaving puts back the very tensors training holds: the
weights, their storage and the optimizer's view of them are unchanged. Trained token rows are written into the
table itself and their previous rows written back on leaving (a copy of a few rows, exact), where PEFT's merge
would copy the whole table (0.6 GiB in fp32 for Gemma 3, twice for a tied head).
"""
from contextlib import contextmanager

import torch


def _mergeable_layers(model) -> list:
    """The unmerged PEFT layers of `model`, or [] when any base weight is not a float tensor: folding LoRA into
    4-bit weights would requantize them, so a QLoRA model generates unmerged, as `fastft eval` does."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer) and not m.merged]
    if any(not m.get_base_layer().weight.is_floating_point() for m in layers):
        return []
    return layers


def _is_token_rows(layer) -> bool:
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    return isinstance(layer, TrainableTokensLayer)


def _write_token_rows(layer, undo: list) -> None:
    """Write the layer's trained rows into its table in place, the rows they replace appended to `undo`; the layer
    then counts as merged, so PEFT's forward reads the table as it is."""
    table = layer.get_base_layer().weight.data
    for name in layer.active_adapters:
        index = torch.tensor(layer.token_indices[name], device=table.device)
        undo.append((table, index, table.index_select(0, index)))
        table.index_copy_(0, index, layer.trainable_tokens_delta[name].detach().to(table))
        layer.merged_adapters.append(name)


@contextmanager
def merged_view(model):
    """Inside, `model` computes with its adapters merged into its base weights; on leaving, every base weight is the
    tensor it was before (same storage, same values)."""
    layers = _mergeable_layers(model)
    # All originals first: layers sharing a base Parameter (a tied embedding and head) see the first merge re-point it.
    originals = [(weight, weight.data) for weight in (layer.get_base_layer().weight for layer in layers
                                                      if not _is_token_rows(layer))]
    rows = []
    try:
        for layer in layers:
            if _is_token_rows(layer):
                _write_token_rows(layer, rows)
            else:
                layer.merge(safe_merge=True)
        yield model
    finally:
        for weight, data in originals:
            weight.data = data
        for table, index, replaced in reversed(rows):  # a tied head wrote the same rows again: undo it first
            table.index_copy_(0, index, replaced)
        for layer in layers:
            layer.merged_adapters.clear()

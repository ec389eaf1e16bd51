"""A training PEFT model seen merged for a while: generation inside a training run decodes as fast as `fastft eval`.

Unmerged, every decoding step pays the LoRA matmuls beside each projection and, for trained token rows
(lora.train_tokens), a copy of the whole embedding matrix (262,144 x 640 for Gemma 3). PEFT's unmerge subtracts
the LoRA product again, which does not give back the fp32 weights bit for bit, so training would drift. Here each
layer merges with safe_merge, into a fresh tensor, and leaving puts back the very tensors training holds: the
weights, their storage and the optimizer's view of them are unchanged.
"""
from contextlib import contextmanager


def _mergeable_layers(model) -> list:
    """The unmerged PEFT layers of `model`, or [] when any base weight is not a float tensor: folding LoRA into
    4-bit weights would requantize them, so a QLoRA model generates unmerged, as `fastft eval` does."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer) and not m.merged]
    if any(not m.get_base_layer().weight.is_floating_point() for m in layers):
        return []
    return layers


@contextmanager
def merged_view(model):
    """Inside, `model` computes with its adapters merged into its base weights; on leaving, every base weight is the
    tensor it was before (same storage, same values)."""
    layers = _mergeable_layers(model)
    # All originals first: a tied head shares the embedding's Parameter, which the embedding's merge re-points.
    held = [(layer, layer.get_base_layer().weight) for layer in layers]
    originals = [(weight, weight.data) for _, weight in held]
    try:
        for layer in layers:
            layer.merge(safe_merge=True)
        yield model
    finally:
        for weight, data in originals:
            weight.data = data
        for layer in layers:
            layer.merged_adapters.clear()

"""PEFT LoRA projections (dense and bitsandbytes 4-bit) through fastft.kernels.lora_linear.

Whether a layer can take the kernel is decided by one function, kernel_adapter, at patch time (for the report)
and again at every call, because merging, disabling or switching adapters can happen after patching.
"""
import functools
import sys

from torch import nn

from ..kernels import lora_linear
from .install import foreign_patch, install, one_active_adapter, ours, plain_forward


@functools.lru_cache(maxsize=None)
def _layer_types() -> tuple:
    """(PEFT's LoraLayer base, dense lora.Linear, bitsandbytes lora.Linear4bit or None): imported once, on first use."""
    from peft.tuners.lora import LoraLayer
    from peft.tuners.lora import bnb as lora_bnb
    from peft.tuners.lora.layer import Linear

    return LoraLayer, Linear, getattr(lora_bnb, "Linear4bit", None)  # Linear4bit exists only with bitsandbytes


def _weight_reason(weight) -> str | None:
    """Why lora_linear cannot read this frozen base weight, or None (a float tensor or an intact bnb 4-bit one)."""
    if weight.requires_grad:
        return "the base weight is trainable (the kernel gives it no gradient)"
    bnb = sys.modules.get("bitsandbytes")  # a 4-bit weight implies bitsandbytes is already imported
    if bnb is None or not isinstance(weight, bnb.nn.Params4bit):
        if weight.is_floating_point():
            return None
        return f"the base weight is quantized as {type(weight).__name__} (only bitsandbytes 4-bit is supported)"
    state = getattr(weight, "quant_state", None)
    if state is None:
        return "the 4-bit base weight has no quant_state attached"
    if getattr(state, "packing_format_for_cpu", False):
        # bitsandbytes repacks NF4 weights in place for its CPU inference kernel; dequantize_4bit cannot read that
        return "bitsandbytes repacked the 4-bit weight for CPU inference"
    return None


def _type_reason(layer) -> str | None:
    lora_layer, dense, four_bit = _layer_types()
    if not isinstance(layer, lora_layer):
        return "not a LoRA layer (not in lora.target_modules)"
    if not isinstance(layer, dense) and not (four_bit and isinstance(layer, four_bit)):
        return f"{type(layer).__module__}.{type(layer).__name__} has no fused LoRA kernel"
    if getattr(layer, "fan_in_fan_out", False):
        return "fan_in_fan_out (Conv1D weight layout) is not supported by lora_linear"
    return None


def _state_reason(layer) -> tuple[str | None, str | None]:
    """(adapter, None) or (None, reason) from what can change after patching: merging, disabling, switching."""
    adapter, reason = one_active_adapter(layer, layer.lora_A, "the adapter is merged into the base weight",
                                         "adapters (the kernel computes exactly one)")
    if reason:
        return None, reason
    if adapter in layer.lora_variant:
        variant = type(layer.lora_variant[adapter]).__name__
        variant = "DoRA (use_dora=True)" if variant.startswith("Dora") else variant
        return None, f"LoRA variant {variant} has no fused kernel"
    if layer.lora_bias.get(adapter, False):
        return None, "lora_bias=True (a bias on lora_B) is not supported by lora_linear"
    return adapter, None


def kernel_adapter(layer) -> tuple[str | None, str | None]:
    """(the one adapter lora_linear computes, None) or (None, why this layer must take PEFT's own path)."""
    reason = _type_reason(layer)
    if reason:
        return None, reason
    adapter, reason = _state_reason(layer)
    reason = reason or _weight_reason(layer.get_base_layer().weight)
    return (None, reason) if reason else (adapter, None)


def dropout_p(dropout: nn.Module) -> float:
    """The probability PEFT's dropout module would use now: its p in training, 0 in eval (or nn.Identity)."""
    return float(dropout.p) if isinstance(dropout, nn.Dropout) and dropout.training else 0.0


@ours
def lora_forward(self, x, *args, **kwargs):
    adapter, _ = kernel_adapter(self)
    if adapter is None or args or kwargs:  # extra arguments: adapter_names mixed batches, aLoRA offsets
        return plain_forward(self, x, *args, **kwargs)
    base = self.get_base_layer()
    return lora_linear(
        x, base.weight, self.lora_A[adapter].weight, self.lora_B[adapter].weight, self.scaling[adapter],
        bias=base.bias, dropout_p=dropout_p(self.lora_dropout[adapter]),
    )


def patch_lora(model, report) -> None:
    lora_layer = _layer_types()[0]
    for name, module in model.named_modules():
        if not isinstance(module, lora_layer):
            continue
        reason = foreign_patch(module) or kernel_adapter(module)[1]
        if reason:
            report.plain("lora", name, reason)
            continue
        install(module, lora_forward)
        report.patched("lora")

"""Put fastft.kernels inside a PEFT-wrapped Hugging Face causal LM: LoRA projections, MLP blocks, RMSNorms, RoPE.

    report = apply_kernels(model, recipe.kernels)
    for line in report.lines(): print(line)

Only module internals are replaced, per instance; the LM head and every output (logits in eval and generation)
stay transformers'. The loss kernel is not patched here: fastft.patching.loss.prompt_masked_loss runs it.
"""
from collections.abc import Mapping

from ..models.families import FAMILIES, family_for, text_config
from .lora import patch_lora
from .mlp import patch_mlps
from .norms import patch_norms
from .report import KINDS, PatchReport
from .rope import patch_rope

__all__ = ["apply_kernels", "PatchReport"]

_SWITCHES = KINDS + ("loss",)


def _switches(kernels_cfg) -> dict:
    """The recipe's kernels section (or a plain dict; None: all on) -> {kind: on?}."""
    if isinstance(kernels_cfg, Mapping):
        return {kind: bool(kernels_cfg.get(kind, True)) for kind in _SWITCHES}
    return {kind: bool(getattr(kernels_cfg, kind, True)) for kind in _SWITCHES}


def apply_kernels(model, kernels_cfg=None) -> PatchReport:
    """Patch `model` (PeftModelForCausalLM, or a transformers model with PEFT LoRA layers) in place."""
    on = _switches(kernels_cfg)
    family, model_type = family_for(getattr(model, "config", None))
    report = PatchReport(family=family.name if family else model_type)
    report.turned_off = [kind for kind in _SWITCHES if not on[kind]]
    if on["loss"]:
        report.notes.append("loss: linear_cross_entropy on labelled positions only (training.loss.prompt_masked_loss)")
    if on["lora"]:  # lora_linear is layer-local: valid for any architecture
        patch_lora(model, report)
    if family is None:
        report.notes.append(
            f"mlp, rms_norm, rope: plain path: no fastft patches for architecture {model_type} "
            f"(patched: {', '.join(sorted(FAMILIES))})"
        )
        return report
    if on["mlp"]:
        patch_mlps(model, family, text_config(model.config), report)
    if on["rms_norm"]:
        patch_norms(model, family, report)
    if on["rope"]:
        patch_rope(model, family, report)
    return report

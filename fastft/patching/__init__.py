"""Put fastft.kernels inside a PEFT-wrapped Hugging Face causal LM: LoRA projections, MLP blocks, RMSNorms, RoPE,
attention on the CPU.

    report = apply_kernels(model, recipe.kernels, dtype)
    for line in report.lines(): print(line)

On CUDA each kernel kind first runs once against its PyTorch path (self_check.py); a kind that fails to launch
or differs stays unpatched for the run, and report.uses(kind) says so to the trainer (the loss).

Only module internals are replaced, per instance; the LM head and every output (logits in eval and generation)
stay transformers'. The loss kernel is not patched here: fastft.patching.loss.prompt_masked_loss runs it.
"""
from collections.abc import Mapping

from ..models.families import FAMILIES, family_for, text_config
from .attention import patch_attention
from .checkpointing import SELECTIVE, selective_note
from .lora import patch_lora
from .mlp import patch_mlps
from .norms import patch_norms
from .report import KINDS, PatchReport
from .rope import patch_rope
from .self_check import check_before_patching
from .trained_tokens import patch_trained_tokens

__all__ = ["apply_kernels", "PatchReport"]

_SWITCHES = KINDS + ("loss",)


def _switches(kernels_cfg) -> dict:
    """The recipe's kernels section (or a plain dict; None: all on) -> {kind: on?}."""
    if isinstance(kernels_cfg, Mapping):
        return {kind: bool(kernels_cfg.get(kind, True)) for kind in _SWITCHES}
    return {kind: bool(getattr(kernels_cfg, kind, True)) for kind in _SWITCHES}


def apply_kernels(model, kernels_cfg=None, dtype=None, check_backend=None, checkpointing=False,
                  device=None) -> PatchReport:
    """Patch `model` (PeftModelForCausalLM, or a transformers model with PEFT LoRA layers) in place.
    dtype: the run's compute dtype for the self-check (default the model's); check_backend: run the self-check on
    that backend wherever the model is (tests: "triton" through the interpreter), instead of on CUDA only.
    checkpointing: training.gradient_checkpointing; "selective" makes the fused MLP blocks recompute gate and up.
    device: where the run trains, for the self-check (default: where the model is; a base loaded on the CPU moves to
    the GPU with the Trainer, after patching)."""
    on = _switches(kernels_cfg)
    family, model_type = family_for(getattr(model, "config", None))
    report = PatchReport(family=family.name if family else model_type)
    report.turned_off = [kind for kind in _SWITCHES if not on[kind]]
    report.checks, failed = check_before_patching(model, on, dtype, check_backend, device)
    report.checked_off = [kind for kind in _SWITCHES if kind in failed]
    on.update(dict.fromkeys(failed, False))
    if on["loss"]:
        report.notes.append("loss: linear_cross_entropy on labelled positions only (training.loss.prompt_masked_loss)")
    if on["lora"]:  # lora_linear is layer-local: valid for any architecture
        patch_lora(model, report)
        patch_trained_tokens(model, report)  # lora.train_tokens' embedding rows, layer-local too
    selective = checkpointing == SELECTIVE
    if family is None:
        report.notes.append(
            f"mlp, rms_norm, rope, attention: plain path: no fastft patches for architecture {model_type} "
            f"(patched: {', '.join(sorted(FAMILIES))})"
        )
        if selective:
            report.notes.append(selective_note(report))
        return report
    if on["mlp"]:
        patch_mlps(model, family, text_config(model.config), report, recompute=selective)
    if selective:
        report.notes.append(selective_note(report))
    if on["rms_norm"]:
        patch_norms(model, family, report)
    if on["rope"]:
        patch_rope(model, family, report)
    if on["attention"]:
        patch_attention(model, family, report)
    return report

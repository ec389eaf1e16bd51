"""What `auto` in a recipe resolves to for a model family and this machine: LoRA targets, QLoRA compute dtype,
attention.

They are filled into the recipe before anything is written, so the saved resolved recipe shows concrete values.
"""
import importlib.util

import torch

from .families import GENERIC, Family, Preset


def qlora_compute(preset: Preset) -> str:
    if not torch.cuda.is_available():
        return "float32"
    if preset.qlora_compute == "bfloat16" and not torch.cuda.is_bf16_supported():
        return "float16"
    return preset.qlora_compute


def attention() -> str:
    flash = torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None
    return "flash_attention_2" if flash else "sdpa"


def apply_presets(recipe, family: Family | None):
    """A copy of the recipe with every `auto` replaced by this family's and this machine's choice."""
    preset = family.preset if family else GENERIC
    model, lora, qlora = recipe.model, recipe.lora, recipe.qlora
    if model.attn_implementation == "auto":
        model = model.model_copy(update={"attn_implementation": attention()})
    if lora.target_modules == "auto":
        lora = lora.model_copy(update={"target_modules": list(preset.targets)})
    if qlora.compute_dtype == "auto":
        qlora = qlora.model_copy(update={"compute_dtype": qlora_compute(preset)})
    return recipe.model_copy(update={"model": model, "lora": lora, "qlora": qlora})

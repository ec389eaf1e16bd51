"""Per-family defaults that `auto` in a recipe resolves to: LoRA targets, QLoRA compute dtype, attention.

They are filled into the recipe before anything is written, so the saved resolved recipe shows concrete values.
"""
import importlib.util
from dataclasses import dataclass

import torch

from ..config.schema import SEVEN_PROJECTIONS


@dataclass(frozen=True)
class Preset:
    targets: tuple[str, ...]
    qlora_compute: str  # on a GPU; the CPU always computes in fp32


_LLAMA = Preset(tuple(SEVEN_PROJECTIONS), "bfloat16")
_QWEN = Preset(tuple(SEVEN_PROJECTIONS), "float16")  # the seed notebooks trained Qwen in fp16
_GEMMA = Preset(tuple(SEVEN_PROJECTIONS), "bfloat16")
FAMILIES = {"llama": _LLAMA, "qwen2": _QWEN, "qwen3": _QWEN, "gemma": _GEMMA, "gemma2": _GEMMA, "gemma3": _GEMMA, "gemma3_text": _GEMMA}
GENERIC = Preset(tuple(SEVEN_PROJECTIONS), "bfloat16")


def model_type(source: str, trust_remote_code: bool = False) -> str:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code).model_type
    except (OSError, ValueError):
        return ""  # loading the model later reports the real problem


def qlora_compute(preset: Preset) -> str:
    if not torch.cuda.is_available():
        return "float32"
    if preset.qlora_compute == "bfloat16" and not torch.cuda.is_bf16_supported():
        return "float16"
    return preset.qlora_compute


def attention() -> str:
    flash = torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None
    return "flash_attention_2" if flash else "sdpa"


def apply_presets(recipe, source: str):
    """A copy of the recipe with every `auto` replaced by this family's and this machine's choice."""
    preset = FAMILIES.get(model_type(source, recipe.model.trust_remote_code), GENERIC)
    model, lora, qlora = recipe.model, recipe.lora, recipe.qlora
    if model.attn_implementation == "auto":
        model = model.model_copy(update={"attn_implementation": attention()})
    if lora.target_modules == "auto":
        lora = lora.model_copy(update={"target_modules": list(preset.targets)})
    if qlora.compute_dtype == "auto":
        qlora = qlora.model_copy(update={"compute_dtype": qlora_compute(preset)})
    return recipe.model_copy(update={"model": model, "lora": lora, "qlora": qlora})

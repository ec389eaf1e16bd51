"""model.backend: which loader builds the model (transformers + PEFT, or Unsloth), and the Unsloth glue.

Unsloth loads 4-bit models and adds LoRA with its own patched kernels; fastft's prompt-masked loss still does the
training step. Unsloth runs only on GPUs (on CPU it imports with UNSLOTH_ALLOW_CPU=1 but from_pretrained fails
with "Found no NVIDIA driver"), so on a machine without one asking for it ends in one FastftError.

UNVERIFIED: load_with_unsloth has not run on a GPU yet (this project's CI machines have none). Selection and the
refusal are tested on CPU; the keyword arguments below follow Unsloth's documented FastLanguageModel API.
"""
import importlib.util

import torch

from ..config.schema import SEVEN_PROJECTIONS
from ..errors import FastftError
from .loader import torch_dtype


def unsloth_installed() -> bool:
    return importlib.util.find_spec("unsloth") is not None


def gpu_available() -> bool:
    """An NVIDIA or AMD GPU (both appear as torch.cuda) or an Intel one (torch.xpu)."""
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or bool(xpu is not None and xpu.is_available())


def _refuse_without_gpu() -> None:
    if not gpu_available():
        raise FastftError("Unsloth needs an NVIDIA/AMD/Intel GPU and this machine has none",
                          where="model.backend", hint="use model.backend: hf")


def select_backend(model_cfg) -> str:
    """"hf" or "unsloth". auto takes Unsloth only with a CUDA GPU and the unsloth extra installed."""
    if model_cfg.backend == "hf":
        return "hf"
    if model_cfg.backend == "auto":
        return "unsloth" if torch.cuda.is_available() and unsloth_installed() else "hf"
    _refuse_without_gpu()
    if not unsloth_installed():
        raise FastftError("model.backend is unsloth but the unsloth package is not installed",
                          where="model.backend", hint="pip install 'fastft[unsloth]', or use model.backend: hf")
    return "unsloth"


def load_with_unsloth(recipe, source: str | None = None):
    """(model, tokenizer): FastLanguageModel in 4-bit when model.quantization is nf4, with LoRA from the recipe."""
    _refuse_without_gpu()
    from unsloth import FastLanguageModel  # patches transformers on import, so only now

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=source or recipe.model.name,
        max_seq_length=recipe.dataset.max_prompt_tokens + recipe.dataset.max_answer_tokens,
        dtype=None if recipe.model.dtype == "auto" else torch_dtype(recipe.model.dtype),  # None ("auto") lets Unsloth pick bf16 where the GPU has it
        load_in_4bit=recipe.model.quantization == "nf4",
        trust_remote_code=recipe.model.trust_remote_code,
    )
    lora = recipe.lora
    targets = list(SEVEN_PROJECTIONS) if lora.target_modules == "all-linear" else list(lora.target_modules)
    model = FastLanguageModel.get_peft_model(
        model,
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,  # Unsloth's fused LoRA path needs 0; other values use its slower path
        target_modules=targets,
        bias=lora.bias,
        use_gradient_checkpointing="unsloth" if recipe.training.gradient_checkpointing else False,
        random_state=recipe.seed,
    )
    return model, tokenizer

"""A LoRA-wrapped model with fastft's kernels in it, ready to train."""
from ..models.chat_tokens import train_token_ids
from ..models.loader import LoadedModel, add_lora, count_params, device_name, load_base_model, resolve_dtype
from ..models.unsloth_backend import load_with_unsloth
from ..patching import apply_kernels


def build_model(recipe, source: str, tokenizer, new_ids: list[int], backend: str = "hf") -> LoadedModel:
    """`recipe` as resolve_recipe returns it; `backend` from unsloth_backend.select_backend, called before anything is written."""
    if backend == "unsloth":
        model, _ = load_with_unsloth(recipe, source)  # unverified until a GPU run exists
        dtype = resolve_dtype(recipe.model.dtype)
    else:
        model, dtype = load_base_model(recipe.model, recipe.qlora, source)
        if new_ids:
            model.resize_token_embeddings(len(tokenizer))
        trained_ids = list(dict.fromkeys(new_ids + train_token_ids(tokenizer, recipe.lora.train_tokens)))
        model = add_lora(model, recipe.lora, recipe.model.quantization == "nf4", recipe.training.gradient_checkpointing, trained_ids)
    kernels = apply_kernels(model, recipe.kernels)
    trainable, total = count_params(model)
    return LoadedModel(model, tokenizer, source, device_name(), dtype, trainable, total, backend, kernels)

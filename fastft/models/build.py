"""Everything between a recipe's model section and a LoRA-wrapped model ready to train.

The tokenizer is prepared first and on its own, so data problems surface before any weights are loaded.
"""
from ..data.chat_templates import template_for
from ..patching import apply_kernels
from .chat_tokens import add_chat_tokens, train_token_ids
from .loader import (LoadedModel, add_lora, count_params, device_name, load_base_model, load_tokenizer, resolve_dtype,
                     resolve_source)
from .presets import apply_presets
from .unsloth_backend import load_with_unsloth


def resolve_recipe(recipe, progress=print):
    """(recipe with every `auto` decided for this model family and machine, local source of the model)."""
    source = resolve_source(recipe.model.name, progress)
    return apply_presets(recipe, source), source


def prepare_tokenizer(recipe, progress=print):
    """(source, tokenizer, ids of chat tokens added to it). A bad lora.train_tokens entry is refused here, before
    anything is written; an entry may name a chat token added just above."""
    source = resolve_source(recipe.model.name, progress)
    tokenizer = load_tokenizer(source, recipe.model.trust_remote_code, progress)
    new_ids = []
    if recipe.dataset.format_type == "chat":
        template = template_for(tokenizer)
        tokenizer.chat_template = template  # saved with the adapter, so inference renders the same turns
        new_ids = add_chat_tokens(tokenizer, template)
    train_token_ids(tokenizer, recipe.lora.train_tokens)
    return source, tokenizer, new_ids


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

"""A recipe's model resolved for this machine, and its tokenizer prepared.

The tokenizer is prepared first and on its own, so data problems surface before any weights are loaded.
"""
from ..data.chat_templates import template_for
from .chat_tokens import add_chat_tokens, train_token_ids
from .loader import load_tokenizer, resolve_source
from .presets import apply_presets


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

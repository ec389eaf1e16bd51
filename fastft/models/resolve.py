"""A recipe's model resolved once per command: where it is, its config and family, the recipe with every `auto`
decided, and the tokenizer prepared the way training prepares it.

The tokenizer comes first and on its own, so data problems surface before any weights are loaded.
"""
from dataclasses import dataclass

from ..data.chat_templates import template_for
from .chat_tokens import add_chat_tokens, train_token_ids
from .families import Family, family_for
from .loader import load_tokenizer, resolve_source
from .presets import apply_presets


@dataclass
class ResolvedModel:
    recipe: object  # the Recipe with every `auto` replaced by the family's and this machine's choice
    source: str  # local folder or hub id the weights load from
    config: object  # transformers config, None when it cannot be read (loading the model then says why)
    model_type: str  # the decoder's model_type
    family: Family | None  # None: a model fastft has no family for
    tokenizer: object  # chat template set and missing chat tokens added
    new_token_ids: list[int]  # chat tokens added to the tokenizer: the embeddings grow by these rows
    trained_token_ids: list[int]  # embedding rows trained: the added tokens, then lora.train_tokens


def resolve_model(recipe, notify=print) -> ResolvedModel:
    """Everything about the recipe's model that can be known without loading weights. A model fastft will not load
    and a bad lora.train_tokens entry are refused here, before anything is written; an entry may name a chat token
    added here."""
    trust = recipe.model.trust_remote_code
    source = resolve_source(recipe.model.name, notify)
    tokenizer, config = load_tokenizer(source, trust, notify)
    family, model_type = family_for(config)
    new_ids = []
    if recipe.dataset.layout == "chat":
        template = template_for(tokenizer)
        tokenizer.chat_template = template  # saved with the adapter, so inference renders the same turns
        new_ids = add_chat_tokens(tokenizer, template)
    trained = list(dict.fromkeys(new_ids + train_token_ids(tokenizer, recipe.lora.train_tokens)))
    return ResolvedModel(apply_presets(recipe, family), source, config, model_type, family, tokenizer, new_ids, trained)

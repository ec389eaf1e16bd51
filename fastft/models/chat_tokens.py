"""Find and add the chat template's special tokens a tokenizer lacks (the model's embeddings grow later)."""
import re

_SPECIAL = re.compile(r"<\|[a-z_]+\|>|<(?:start|end)_of_turn>")


def missing_chat_tokens(tokenizer, template: str) -> list[str]:
    vocab = tokenizer.get_vocab()
    found = dict.fromkeys(_SPECIAL.findall(template))
    return [token for token in found if token not in vocab]


def add_chat_tokens(tokenizer, template: str) -> list[int]:
    """Returns the ids of the added tokens (empty when the tokenizer already had them)."""
    missing = missing_chat_tokens(tokenizer, template)
    if not missing:
        return []
    tokenizer.add_special_tokens({"additional_special_tokens": missing})
    return tokenizer.convert_tokens_to_ids(missing)

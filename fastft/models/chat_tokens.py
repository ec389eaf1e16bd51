"""Chat-template tokens: add the ones a tokenizer lacks (the model's embeddings grow later) and resolve the existing
tokens a recipe asks to train (`lora.train_tokens`)."""
import difflib
import re

from ..errors import FastftError

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


def train_token_ids(tokenizer, tokens: list[str]) -> list[int]:
    """The ids of `lora.train_tokens`, each of which must be one entry of the vocabulary (added tokens included):
    training a row only helps the token that row belongs to, so a string that splits into pieces is refused."""
    vocab = tokenizer.get_vocab()
    for token in tokens:
        if token not in vocab:
            raise _not_one_token(tokenizer, vocab, token)
    return [vocab[token] for token in tokens]


def _not_one_token(tokenizer, vocab: dict, token: str) -> FastftError:
    pieces = tokenizer.tokenize(token)
    closest = difflib.get_close_matches(token, vocab, n=3, cutoff=0.6)
    hint = "name a single token of the tokenizer, written as it appears in its vocabulary"
    if closest:
        hint += f"; closest: {', '.join(map(repr, closest))}"
    return FastftError(f"{token!r} is not a single token of the tokenizer (it splits into {len(pieces)}: {pieces})",
                       where="lora.train_tokens", hint=hint)

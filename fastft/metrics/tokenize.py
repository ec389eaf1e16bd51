"""Word and morpheme tokenizers shared by the Korean metrics.

Korean attaches particles (조사) and endings to the word they follow, so whitespace tokens treat
`#Person1#은` and `#Person1#이` as different words; Kiwi morphemes split them into `#Person1#` + particle.
"""
import functools
import re

from ..errors import FastftError
from ..runtime.heap import return_freed_pages

# Anonymisation placeholders in the dialogue data (#Person1#, #PhoneNumber#, ...): Kiwi would cut them at '#'.
PLACEHOLDER = re.compile(r"#[A-Za-z][A-Za-z0-9]*#")
TOKENIZERS = ("whitespace", "morpheme")


def check_tokenizer(name: str) -> None:
    if name not in TOKENIZERS:
        raise FastftError(f"unknown tokenizer {name!r}", hint=f"use one of: {', '.join(TOKENIZERS)}")


@functools.cache
def _kiwi():
    # Loaded on first use and kept until release_morphemes(): building the analyser takes about a second.
    try:
        from kiwipiepy import Kiwi
    except ImportError as exc:
        raise FastftError("morpheme tokenization needs kiwipiepy", hint="pip install kiwipiepy==0.24.1") from exc
    return Kiwi()


def release_morphemes() -> None:
    """Drop the Kiwi analyser and hand its pages back: it holds about 0.25 GiB once it has tokenized (0.5 GiB
    resident in all with the library's own), which a training run would otherwise carry between evaluations."""
    _kiwi.cache_clear()
    return_freed_pages()


def morphemes(text: str) -> list[str]:
    """Kiwi morpheme forms, each placeholder kept as one token."""
    spans = [(m.start(), m.end(), "NNP") for m in PLACEHOLDER.finditer(text)]
    return [token.form for token in _kiwi().tokenize(text, pretokenized=spans)]


def tokens(text: str, tokenize: str) -> list[str]:
    check_tokenizer(tokenize)
    return text.split() if tokenize == "whitespace" else morphemes(text)

"""Extractive QA: exact match and token F1 (x100), SQuAD-style, with whitespace or morpheme tokens.

Tokens are compared after lower-casing and deleting punctuation, so `서울,` matches `서울` and `"4회"` matches `4회`.
With morphemes, `서울에서` gets partial credit against `서울`; with whitespace tokens it gets none.
A reference may be a list of acceptable answers: each example takes its best-matching one, as in SQuAD.
"""
import unicodedata
from collections import Counter

from .references import reference_lists
from .tokenize import check_tokenizer, tokens


def _strip_punctuation(token: str) -> str:
    return "".join(ch for ch in token if not unicodedata.category(ch).startswith("P")).lower()


def normalized_tokens(text: str, tokenize: str = "whitespace") -> list[str]:
    # Tokenize first, then strip: deleting '#' before Kiwi runs would break placeholders apart.
    return [t for t in map(_strip_punctuation, tokens(text, tokenize)) if t]


def exact_match_one(prediction: str, answer: str) -> float:
    return float(normalized_tokens(prediction) == normalized_tokens(answer))


def f1_one(prediction: str, answer: str, tokenize: str = "whitespace") -> float:
    pred, gold = normalized_tokens(prediction, tokenize), normalized_tokens(answer, tokenize)
    if not pred or not gold:
        return float(pred == gold)  # both empty: a correct "no answer"
    common = sum((Counter(pred) & Counter(gold)).values())
    if not common:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def qa_metrics(predictions: list[str], references: list, tokenize: str = "whitespace") -> dict[str, float]:
    """{"exact_match": ..., "f1": ...}, each a mean x100 over examples."""
    check_tokenizer(tokenize)
    answers = reference_lists(predictions, references)
    em = [max(exact_match_one(p, a) for a in golds) for p, golds in zip(predictions, answers)]
    f1 = [max(f1_one(p, a, tokenize) for a in golds) for p, golds in zip(predictions, answers)]
    return {"exact_match": 100 * sum(em) / len(em), "f1": 100 * sum(f1) / len(f1)}

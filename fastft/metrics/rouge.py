"""ROUGE-1, ROUGE-2 and ROUGE-L F1 (x100) counted the way the Korean dialogue-summarization competition counts them.

The competition's baseline scored with the `rouge` package 1.0.1 (`Rouge().get_scores`), whose counting is not
ROUGE-1.5.5's and not `rouge-score`'s:
- the text is cut into sentences at every '.', and each sentence's whitespace is collapsed;
- n-grams are a set (`exclusive=True`): a repeated word or bigram counts once, in the overlap and in both lengths;
- bigrams run on across sentence boundaries;
- ROUGE-L is the summary-level union LCS, but the union is a set of word types over all reference sentences,
  and both lengths count distinct words.
`rouge_score.RougeScorer` counts repeats and books LCS hits per token; half of the shipped dev summaries repeat a
word, and on prediction/reference pairs built from them RougeScorer with a whitespace tokenizer and '.'-sentences
was off by up to 3.3 points on 39 of 40. So the counting here uses sets, and only the LCS itself comes from
rouge-score. `tokenize` changes the words, never the counting.
"""
from rouge_score.rouge_scorer import lcs_ind

from .references import reference_lists
from .tokenize import check_tokenizer, morphemes

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")


def _baseline_words(sentence: str) -> list[str]:
    # Not sentence.split(): the baseline keeps a whitespace-only sentence (e.g. after a final ". ") as one
    # empty word, which then counts like any other word.
    return " ".join(sentence.split()).split(" ")


def _sentences(text: str, tokenize: str) -> list[list[str]]:
    words = _baseline_words if tokenize == "whitespace" else morphemes
    return [words(part) for part in text.split(".") if part]


def _f1(overlap: int, hyp_count: int, ref_count: int) -> float:
    precision = overlap / hyp_count if hyp_count else 0.0
    recall = overlap / ref_count if ref_count else 0.0
    # The baseline's formula, epsilon included, so that scores agree to the last digit.
    return 2.0 * ((precision * recall) / (precision + recall + 1e-8))


def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def _rouge_n(hyp_words: list[str], ref_words: list[str], n: int) -> float:
    hyp, ref = _ngrams(hyp_words, n), _ngrams(ref_words, n)
    return _f1(len(hyp & ref), len(hyp), len(ref))


def _lcs_union(hyp_sents: list[list[str]], ref_sents: list[list[str]]) -> set[str]:
    union = set()
    for ref in ref_sents:
        for hyp in hyp_sents:
            # With the hypothesis first, lcs_ind breaks ties by stepping back in the hypothesis, as the
            # baseline does; the other order can pick another LCS with a different set of words.
            union.update(hyp[i] for i in lcs_ind(hyp, ref))
    return union


def score_pair(prediction: str, reference: str, tokenize: str = "whitespace") -> dict[str, float]:
    """F1 in [0, 1] for one prediction against one reference; 0 where either has no words."""
    check_tokenizer(tokenize)
    hyp_sents, ref_sents = _sentences(prediction, tokenize), _sentences(reference, tokenize)
    hyp_words = [w for sent in hyp_sents for w in sent]
    ref_words = [w for sent in ref_sents for w in sent]
    if not hyp_words or not ref_words:  # the `rouge` package raises here instead
        return dict.fromkeys(ROUGE_KEYS, 0.0)
    lcs = len(_lcs_union(hyp_sents, ref_sents))
    return {
        "rouge1": _rouge_n(hyp_words, ref_words, 1),
        "rouge2": _rouge_n(hyp_words, ref_words, 2),
        "rougeL": _f1(lcs, len(set(hyp_words)), len(set(ref_words))),
    }


def _mean_over_references(prediction: str, refs: list[str], tokenize: str) -> dict[str, float]:
    scores = [score_pair(prediction, ref, tokenize) for ref in refs]
    return {key: sum(s[key] for s in scores) / len(scores) for key in ROUGE_KEYS}


def rouge(predictions: list[str], references: list, tokenize: str = "whitespace") -> dict[str, float]:
    """Mean F1 x100 of ROUGE-1, -2, -L and their sum. A reference may be a list of summaries: the prediction is
    scored against each and those scores averaged, as the competition does with its several test references."""
    check_tokenizer(tokenize)
    refs = reference_lists(predictions, references)
    per_example = [_mean_over_references(p, r, tokenize) for p, r in zip(predictions, refs)]
    result = {key: 100 * sum(s[key] for s in per_example) / len(per_example) for key in ROUGE_KEYS}
    result["rouge_sum"] = sum(result[key] for key in ROUGE_KEYS)
    return result

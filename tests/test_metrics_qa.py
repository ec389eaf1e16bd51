"""QA exact match and token F1 against values worked out by hand."""
import pytest

from fastft.errors import FastftError
from fastft.metrics import qa_metrics
from fastft.metrics.qa import f1_one, normalized_tokens


def test_normalisation_drops_punctuation_and_case_but_keeps_words():
    assert normalized_tokens('  "4회",  (Seoul)  ') == ["4회", "seoul"]
    assert normalized_tokens("#Person1#은", "morpheme") == ["person1", "은"]
    assert normalized_tokens("?!") == []


def test_exact_match_after_normalisation():
    scores = qa_metrics(["「4회」", "4회 운항", "빨강."], ["4회", "4회", "빨강"])
    assert scores["exact_match"] == pytest.approx(200 / 3)


def test_whitespace_f1_by_hand():
    # prediction 하루 4회 운항 / answer 4회: 1 shared of 3 and of 1 -> P 1/3, R 1 -> F1 1/2.
    assert f1_one("하루 4회 운항", "4회") == pytest.approx(0.5)
    # Repeats count up to the answer's count: 4회 4회 vs 4회 -> P 1/2, R 1 -> 2/3.
    assert f1_one("4회 4회", "4회") == pytest.approx(2 / 3)
    assert f1_one("서울에서", "서울") == 0.0  # one whitespace word each, and they differ


def test_morpheme_f1_credits_the_stem_behind_a_particle():
    # 서울에서 -> 서울 + 에서, answer 서울 -> P 1/2, R 1 -> 2/3.
    assert f1_one("서울에서", "서울", "morpheme") == pytest.approx(2 / 3)


def test_empty_answers_and_predictions():
    assert f1_one("", "") == 1.0  # both say "no answer"
    assert f1_one("", "4회") == 0.0 and f1_one("4회", "") == 0.0


def test_best_of_several_answers_and_means_over_examples():
    preds = ["덕적도", "하루 4회 운항", "모른다"]
    refs = [["인천항", "덕적도"], ["4회", "하루 4회"], "빨강"]
    # per example: EM 1, 0, 0; F1 1, max(1/2, 4/5), 0 -> means 33.3 and 60.
    scores = qa_metrics(preds, refs)
    assert scores["exact_match"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(100 * (1 + 0.8) / 3)


def test_mismatched_lengths_are_a_user_error():
    with pytest.raises(FastftError, match="1 predictions against 2 references"):
        qa_metrics(["4회"], ["4회", "빨강"])

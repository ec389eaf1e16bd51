"""fastft.metrics.rouge against the `rouge` 1.0.1 package the competition baseline scored with."""
import csv

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rouge import Rouge

from fastft.errors import FastftError
from fastft.metrics import rouge
from fastft.metrics.tokenize import morphemes
from tests.factories import SAMPLE_DEV

PACKAGE_KEYS = {"rouge1": "rouge-1", "rouge2": "rouge-2", "rougeL": "rouge-l"}


def dev_summaries() -> dict[str, str]:
    with SAMPLE_DEV.open(encoding="utf-8") as f:
        return {row["fname"]: row["summary"] for row in csv.DictReader(f)}


REFS = dev_summaries()
# Hand-written, model-like predictions for the first ten dev dialogues.
PREDICTIONS = {
    "dev_0": REFS["dev_0"],  # an exact copy
    "dev_1": "#Person2#는 헌혈하러 왔지만 최근 사랑니를 뽑고 항생제를 복용 중이라 오늘은 헌혈할 수 없다는 말을 듣는다.",
    "dev_2": "#Person1#은 캠핑장 예약을 한 주 뒤로 미루려고 전화한다. #Person2#는 B구역을 권하고, #Person1#은 차액을 내고 B구역으로 변경한다.",
    "dev_3": "#Person1#은 #Person2#에게 결혼식 축가를 부탁하고, #Person2#는 '두 사람'을 부르기로 한다.",
    "dev_4": "#Person1#과 #Person2#는 중고 카시트 직거래 장소를 정한다. #Person1#이 차를 타고 아파트 정문으로 가기로 하고, 햇빛 가리개를 덤으로 받기로 한다.",
    # A trailing space after the last '.': the baseline turns it into an empty word.
    "dev_5": "#Person1#은 코트의 잉크 얼룩이 그대로라고 항의한다. #Person2#는 만 원을 추가로 받고 얼룩 제거를 다시 해 주기로 한다. ",
    # Degenerate repetition, which set counting scores very differently from counting repeats.
    "dev_6": "#Person1#은 자전거 수리점을 찾는다. #Person1#은 자전거 수리점을 찾는다. #Person1#은 자전거 수리점을 찾는다.",
    "dev_7": "독서 모임에서  다음 달 책을 고른다.\n『지구 끝의 온실』을 이번 달에 읽기로 한다.",
    "dev_8": "#Person2#는 #Person1#에게 멀미 패치를 권하고 딸에게는 어린이용 멀미약을 준다",  # no final '.'
    "dev_9": "#Person1#은 환전을 하러 은행에 와서 달러로 바꾼다.",  # mostly wrong
}


def package_f(prediction: str, reference: str) -> dict[str, float]:
    """One pair as the package scores it; it raises on an empty hypothesis, which the competition counts as 0."""
    try:
        scores = Rouge().get_scores(prediction, reference)[0]
    except ValueError:
        return dict.fromkeys(PACKAGE_KEYS, 0.0)
    return {ours: scores[theirs]["f"] for ours, theirs in PACKAGE_KEYS.items()}


def assert_matches(result: dict, expected_f: dict) -> None:
    for key in PACKAGE_KEYS:
        assert result[key] == pytest.approx(100 * expected_f[key], abs=1e-9), key
    assert result["rouge_sum"] == pytest.approx(sum(result[k] for k in PACKAGE_KEYS), abs=1e-9)


def test_whitespace_matches_rouge_package_on_korean_predictions():
    names = list(PREDICTIONS)
    preds, refs = [PREDICTIONS[n] for n in names], [REFS[n] for n in names]
    averaged = Rouge().get_scores(preds, refs, avg=True)
    assert_matches(rouge(preds, refs), {ours: averaged[theirs]["f"] for ours, theirs in PACKAGE_KEYS.items()})


def test_exact_copy_scores_100_and_pairs_agree_one_by_one():
    assert rouge([REFS["dev_0"]], [REFS["dev_0"]])["rouge1"] == pytest.approx(100, abs=1e-5)
    for name, prediction in PREDICTIONS.items():
        assert_matches(rouge([prediction], [REFS[name]]), package_f(prediction, REFS[name]))


def test_empty_prediction_scores_zero_and_counts_in_the_mean():
    preds = [PREDICTIONS["dev_1"], "", PREDICTIONS["dev_3"]]
    refs = [REFS["dev_1"], REFS["dev_2"], REFS["dev_3"]]
    with pytest.raises(ValueError):
        Rouge().get_scores("", REFS["dev_2"])
    pairs = [package_f(p, r) for p, r in zip(preds, refs)]
    assert_matches(rouge(preds, refs), {k: sum(p[k] for p in pairs) / 3 for k in PACKAGE_KEYS})
    assert rouge([""], [REFS["dev_2"]])["rouge_sum"] == 0


def test_several_references_are_each_scored_then_averaged():
    # Other dev summaries stand in for the extra test-set references.
    refs = [[REFS["dev_2"], REFS["dev_3"], REFS["dev_4"]], [REFS["dev_6"]], [REFS["dev_8"], REFS["dev_9"]]]
    preds = [PREDICTIONS["dev_2"], PREDICTIONS["dev_6"], ""]
    per_prediction = []
    for prediction, options in zip(preds, refs):
        pairs = [package_f(prediction, r) for r in options]
        per_prediction.append({k: sum(p[k] for p in pairs) / len(pairs) for k in PACKAGE_KEYS})
    expected = {k: sum(p[k] for p in per_prediction) / len(preds) for k in PACKAGE_KEYS}
    assert_matches(rouge(preds, refs), expected)


# Few distinct words, so repeats, ties between equally long LCSs, empty sentences and stray spaces are common.
_pieces = st.sampled_from(["#Person1#은", "우산을", "찾는다", "우산", "은", ".", " ", "  ", "\n", ". "])
_texts = st.lists(_pieces, min_size=1, max_size=14).map(" ".join)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(prediction=_texts, reference=_texts)
def test_whitespace_matches_rouge_package_on_generated_edge_cases(prediction, reference):
    if not reference.replace(".", ""):
        reference += "우산"  # the package cannot score an empty reference at all
    assert_matches(rouge([prediction], [reference]), package_f(prediction, reference))


def test_morpheme_tokens_keep_placeholders_whole():
    tokens = morphemes("#Person1#은 #PhoneNumber#로 #Person2#에게 전화한다")
    assert tokens[:4] == ["#Person1#", "은", "#PhoneNumber#", "로"]
    assert "#Person2#" in tokens and "#" not in tokens


def test_morpheme_gives_credit_for_particle_differences():
    prediction, reference = "#Person2#가 우산은 돌려줬다", "#Person2#는 우산을 돌려준다"
    assert rouge([prediction], [reference])["rouge_sum"] == 0  # every whitespace word differs by its 조사/어미
    morph = rouge([prediction], [reference], tokenize="morpheme")
    assert morph["rouge1"] > 20 and morph["rougeL"] > 20  # shared morphemes: #Person2#, 우산


def test_morpheme_mode_counts_like_the_package_on_morpheme_text():
    # The leaderboard's morpheme variant: segment into morphemes, rejoin with spaces, score with the package.
    def as_morphemes(text):
        return ".".join(" ".join(morphemes(part)) for part in text.split("."))

    for name in ("dev_2", "dev_4", "dev_6"):
        expected = package_f(as_morphemes(PREDICTIONS[name]), as_morphemes(REFS[name]))
        assert_matches(rouge([PREDICTIONS[name]], [REFS[name]], tokenize="morpheme"), expected)


def test_bad_inputs_are_user_errors():
    with pytest.raises(FastftError, match="2 predictions against 1 references"):
        rouge(["a", "b"], ["a"])
    with pytest.raises(FastftError, match="empty list of references"):
        rouge(["a"], [[]])
    with pytest.raises(FastftError, match="unknown tokenizer"):
        rouge(["a"], ["a"], tokenize="jamo")

"""SWC label parsing, accuracy, macro-F1 and the confusion table, checked against hand-counted values."""
import pytest

from fastft.errors import FastftError
from fastft.metrics import classification_metrics, confusion_markdown, parse_label


@pytest.mark.parametrize("text, label", [
    ("SWC-107: withdraw가 외부 호출 뒤에 잔액을 갱신합니다.", "SWC-107"),
    ("이 코드는 SWC-101에 해당합니다. SWC-104일 수도 있습니다.", "SWC-101"),  # Hangul right after the id; first wins
    ("swc-116 (timestamp dependence)", "SWC-116"),
    ("Safe: 취약점이 없습니다.", "safe"),
    ("unsafe delegatecall, see SWC-112", "SWC-112"),  # not the 'safe' inside 'unsafe'
    ("safety first; 판단할 수 없습니다", None),
    ("취약점이 없습니다.", None),
])
def test_parse_label(text, label):
    assert parse_label(text) == label


def test_accuracy_macro_f1_and_confusion_by_hand():
    references = ["SWC-107", "SWC-107", "SWC-101", "safe", "safe"]
    predictions = ["SWC-107: 재진입", "SWC-101: 오버플로", "SWC-101", "safe", "모르겠습니다"]
    result = classification_metrics(predictions, references)
    assert result["labels"] == ["SWC-101", "SWC-107", "safe", "(none)"]
    assert result["accuracy"] == pytest.approx(60.0)
    # F1 per label: SWC-101 tp1 fp1 fn0 -> 2/3; SWC-107 tp1 fp0 fn1 -> 2/3; safe tp1 fp0 fn1 -> 2/3;
    # (none) tp0 fp1 -> 0. Macro over the four labels present: 2/4 = 50.
    assert result["macro_f1"] == pytest.approx(50.0)
    assert result["unparsed"] == 1
    assert result["confusion"]["SWC-107"] == {"SWC-101": 1, "SWC-107": 1, "safe": 0, "(none)": 0}
    assert result["confusion"]["safe"]["(none)"] == 1
    assert sum(sum(row.values()) for row in result["confusion"].values()) == 5


def test_label_only_in_predictions_counts_in_macro_f1():
    # SWC-120 never occurs in the references: its F1 is 0 and it joins the average.
    # SWC-104: tp1 fp0 fn1 -> 2/3; SWC-120: 0 -> macro 1/3.
    result = classification_metrics(["SWC-104", "SWC-120"], ["SWC-104", "SWC-104"])
    assert result["macro_f1"] == pytest.approx(100 / 3)


def test_ids_sort_by_number_in_the_markdown_table():
    result = classification_metrics(["SWC-9", "SWC-10"], ["SWC-10", "SWC-10"])
    assert confusion_markdown(result["confusion"]).splitlines() == [
        "| reference \\ predicted | SWC-9 | SWC-10 |",
        "|---|---|---|",
        "| SWC-9 | 0 | 0 |",
        "| SWC-10 | 1 | 1 |",
    ]


def test_unreadable_reference_is_a_user_error():
    with pytest.raises(FastftError, match="not an SWC id or 'safe'"):
        classification_metrics(["SWC-107"], ["reentrancy"])

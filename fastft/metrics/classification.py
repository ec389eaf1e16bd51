"""Solidity vulnerability classification: SWC ids read from generated text, accuracy, macro-F1, confusion table.

The trained answer starts with its category (`SWC-107: ...` or `safe`), but a model may wrap it in prose, so the
first SWC id or `safe` anywhere in the text is the prediction. Text with neither counts as the label `(none)`:
always wrong, and part of macro-F1 like any other wrong label.
"""
import re
from collections import Counter

from ..errors import FastftError
from .references import check_paired

# Lookarounds rather than \b: Python's \b sees Hangul as a word character, so `SWC-107에` would not match,
# and `safe` must not match inside `unsafe` or `safety`.
_LABEL = re.compile(r"(?<![A-Za-z0-9-])(?:SWC-\d+|safe)(?![A-Za-z0-9])", re.IGNORECASE)
UNPARSED = "(none)"


def parse_label(text: str) -> str | None:
    """`SWC-<n>` or `safe` (canonical case) for the first one in the text, else None."""
    match = _LABEL.search(text)
    if not match:
        return None
    label = match.group(0)
    return "safe" if label.lower() == "safe" else label.upper()


def _label_order(label: str) -> tuple:
    # SWC ids by number, then safe, then unparsed.
    if label.startswith("SWC-"):
        return (0, int(label[4:]))
    return (1 if label == "safe" else 2, 0)


def _reference_labels(references: list[str]) -> list[str]:
    labels = [parse_label(r) for r in references]
    bad = [r for r, label in zip(references, labels) if label is None]
    if bad:
        raise FastftError(f"{len(bad)} reference labels are not an SWC id or 'safe', e.g. {bad[0]!r}",
                          hint="reference categories look like SWC-107 or safe")
    return labels


def _f1(tp: int, fp: int, fn: int) -> float:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def classification_metrics(predictions: list[str], references: list[str]) -> dict:
    """accuracy and macro_f1 (x100), the label list, and confusion[reference][predicted] = count."""
    check_paired(predictions, references)
    gold = _reference_labels(references)
    pred = [parse_label(p) or UNPARSED for p in predictions]
    labels = sorted(set(gold) | set(pred), key=_label_order)
    pairs = Counter(zip(gold, pred))
    confusion = {g: {p: pairs[g, p] for p in labels} for g in labels}
    per_label = []
    for label in labels:
        tp = pairs[label, label]
        fp = sum(confusion[g][label] for g in labels) - tp
        fn = sum(confusion[label].values()) - tp
        per_label.append(_f1(tp, fp, fn))
    return {
        "accuracy": 100 * sum(g == p for g, p in zip(gold, pred)) / len(gold),
        "macro_f1": 100 * sum(per_label) / len(per_label),
        "labels": labels,
        "unparsed": pred.count(UNPARSED),
        "confusion": confusion,
    }


def confusion_markdown(confusion: dict[str, dict[str, int]]) -> str:
    """Rows are reference labels, columns predicted labels."""
    labels = list(confusion)
    lines = ["| reference \\ predicted | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    lines += [f"| {g} | " + " | ".join(str(confusion[g][p]) for p in labels) + " |" for g in labels]
    return "\n".join(lines)

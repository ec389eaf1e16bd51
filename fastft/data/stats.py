"""The numbers a split is summarised by: the start-up summary, `fastft preview` and report.md all show these."""
from .encode import IGNORE_INDEX


def split_stats(split) -> dict:
    s = split.stats
    lengths = [len(ids) for ids in split.dataset["input_ids"]]
    return {
        "examples": len(split.dataset),  # rows trained on: fewer than `kept` when packing joins examples
        "rendered": s.total,
        "kept": s.kept,
        "path": str(split.path),
        "tokens": sum(lengths),
        "trained_tokens": sum(sum(1 for label in labels if label != IGNORE_INDEX) for labels in split.dataset["labels"]),
        "max_length": max(lengths),
        "prompt_truncated": s.prompt_truncated,
        "answer_truncated": s.answer_truncated,
        "dropped": len(s.dropped),
    }


def named_splits(train, evaluation) -> dict:
    return {name: split for name, split in (("train", train), ("eval", evaluation)) if split is not None}


def data_stats(train, evaluation) -> dict:
    return {name: split_stats(split) for name, split in named_splits(train, evaluation).items()}

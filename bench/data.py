"""Token rows for a workload: the summarization sample tokenized by fastft's own encoder, fitted to a length.

Each row is exactly seq_len real tokens (no padding, so every system does the same work): a prompt made of the
end of the concatenated prompts up to this example, then an answer made of this example's answer followed by
the next ones', split so that the requested fraction of positions is prompt. Prompt positions get label -100.
"""
import itertools
from dataclasses import dataclass

from fastft.data.encode import IGNORE_INDEX


@dataclass(frozen=True)
class Row:
    input_ids: list[int]
    n_prompt: int

    @property
    def labels(self) -> list[int]:
        return [IGNORE_INDEX] * self.n_prompt + self.input_ids[self.n_prompt:]

    @property
    def completion_mask(self) -> list[int]:
        return [0] * self.n_prompt + [1] * (len(self.input_ids) - self.n_prompt)

    @property
    def trained(self) -> int:
        """Positions whose next token is scored (labels shift by one; the first position is never a target)."""
        return len(self.input_ids) - max(self.n_prompt, 1)


def encoded_sample(dataset_cfg, tokenizer) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, answer ids) of every sample example, through fastft's data pipeline."""
    from fastft.data.pipeline import build_splits

    train, _ = build_splits(dataset_cfg, tokenizer, None)
    pieces = []
    for ids, labels in zip(train.dataset["input_ids"], train.dataset["labels"]):
        start = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
        pieces.append((ids[:start], ids[start:]))
    return pieces


def natural_masked_fraction(pieces) -> float:
    return sum(len(p) for p, _ in pieces) / sum(len(p) + len(a) for p, a in pieces)


def _take(parts, n: int, from_end: bool) -> list[int]:
    """n tokens of the cyclic stream of parts: its start, or (from_end) the n tokens ending with the first part."""
    out: list[int] = []
    for part in itertools.cycle(parts):
        if len(out) >= n:
            break
        out = part + out if from_end else out + part
    return out[len(out) - n:] if from_end else out[:n]


def fitted_rows(pieces, count: int, seq_len: int, masked_frac: float, vocab_size: int) -> list[Row]:
    if not 0.0 <= masked_frac < 1.0:
        raise ValueError(f"masked fraction must be in [0, 1), got {masked_frac}")
    n_answer = max(1, round(seq_len * (1.0 - masked_frac)))
    n_prompt = seq_len - n_answer
    prompts, answers = [p for p, _ in pieces], [a for _, a in pieces]
    rows = []
    for i in range(count):
        k = i % len(pieces)
        prompt = _take(prompts[k::-1] + prompts[:k:-1], n_prompt, from_end=True) if n_prompt else []
        answer = _take(answers[k:] + answers[:k], n_answer, from_end=False)
        rows.append(Row([t % vocab_size for t in prompt + answer], n_prompt))
    return rows


def batched(rows: list[Row], batch: int) -> list[list[Row]]:
    return [rows[i:i + batch] for i in range(0, len(rows), batch)]

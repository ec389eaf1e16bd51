"""Tokenize rendered examples into input_ids and labels: prompt masked, answers kept, prompt cut from the left."""
from dataclasses import dataclass, field

from .render import Piece, Renderer
from .tasks import Example

IGNORE_INDEX = -100


@dataclass
class EncodeStats:
    total: int = 0
    prompt_truncated: int = 0
    answer_truncated: int = 0
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (example id, reason)

    @property
    def kept(self) -> int:
        return self.total - len(self.dropped)


@dataclass
class _Tokens:
    ids: list[int]
    piece: Piece


class Encoder:
    def __init__(self, renderer: Renderer, max_prompt_tokens: int, max_answer_tokens: int):
        self.renderer = renderer
        self.tokenizer = renderer.tokenizer
        self.max_prompt_tokens = max_prompt_tokens
        self.max_answer_tokens = max_answer_tokens

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def _fit(self, example: Example, budget: int) -> tuple[list[_Tokens], bool] | None:
        """Prompt tokens per piece within `budget`, cuttable pieces losing tokens from the left in order.
        Returns (pieces, truncated), or None when the fixed parts alone leave no room for any cuttable token."""
        pieces = [_Tokens(self._ids(piece.text), piece) for piece in self.renderer.prompt_pieces(example)]
        excess = sum(len(p.ids) for p in pieces) - budget
        if excess <= 0:
            return pieces, False
        if excess >= sum(len(p.ids) for p in pieces if p.piece.cuttable):
            return None
        for part in pieces:
            if part.piece.cuttable and excess > 0:
                cut = min(excess, len(part.ids))
                part.ids, excess = part.ids[cut:], excess - cut
        return pieces, True

    def prompt_ids(self, example: Example, budget: int | None = None) -> tuple[list[int], bool] | None:
        """The generation prompt within `budget` (default max_prompt_tokens): (ids, truncated), or None."""
        fitted = self._fit(example, self.max_prompt_tokens if budget is None else budget)
        if fitted is None:
            return None
        pieces, truncated = fitted
        return [token for part in pieces for token in part.ids], truncated

    def encode(self, example: Example, stats: EncodeStats) -> dict | None:
        """input_ids/labels for one example, or None (recorded in stats) when it cannot be trained."""
        stats.total += 1
        if example.answer is None or not str(example.answer).strip():
            stats.dropped.append((example.id, "empty answer"))
            return None
        answer = self._ids(self.renderer.answer_text(example))
        if len(answer) > self.max_answer_tokens:
            answer = answer[: self.max_answer_tokens]
            stats.answer_truncated += 1
        # The answer never gives up tokens to the prompt; a short answer leaves its unused budget to the prompt.
        fitted = self._fit(example, self.max_prompt_tokens + self.max_answer_tokens - len(answer))
        if fitted is None:
            stats.dropped.append((example.id, "instruction and template alone exceed max_prompt_tokens"))
            return None
        pieces, truncated = fitted
        stats.prompt_truncated += truncated
        input_ids, labels = [], []
        for part in pieces:
            input_ids += part.ids
            labels += part.ids if part.piece.trained else [IGNORE_INDEX] * len(part.ids)
        return {"input_ids": input_ids + answer, "labels": labels + answer, "example_id": example.id}

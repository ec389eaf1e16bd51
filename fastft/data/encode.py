"""Tokenize rendered examples into input_ids and labels: prompt masked, answer kept, prompt cut from the left."""
from dataclasses import dataclass, field

from .formats import Example
from .render import Renderer

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


class Encoder:
    def __init__(self, renderer: Renderer, max_prompt_tokens: int, max_answer_tokens: int):
        self.renderer = renderer
        self.tokenizer = renderer.tokenizer
        self.max_prompt_tokens = max_prompt_tokens
        self.max_answer_tokens = max_answer_tokens

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def prompt_ids(self, example: Example, budget: int | None = None) -> tuple[list[int], bool] | None:
        """Prompt tokens within `budget` (default max_prompt_tokens), body cut from the left.
        Returns (ids, truncated), or None when the template and instruction alone exceed the budget."""
        budget = self.max_prompt_tokens if budget is None else budget
        head, body, tail = (self._ids(part) for part in self.renderer.prompt_parts(example))
        room = budget - len(head) - len(tail)
        if room < 0 or (room == 0 and body):
            return None
        truncated = len(body) > room
        if truncated:
            body = body[len(body) - room:]
        return head + body + tail, truncated

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
        prompt = self.prompt_ids(example, self.max_prompt_tokens + self.max_answer_tokens - len(answer))
        if prompt is None:
            stats.dropped.append((example.id, "instruction and template alone exceed max_prompt_tokens"))
            return None
        prompt_ids, truncated = prompt
        stats.prompt_truncated += truncated
        return {
            "input_ids": prompt_ids + answer,
            "labels": [IGNORE_INDEX] * len(prompt_ids) + answer,
            "example_id": example.id,
        }

"""Looping predictions: a generated answer that says the same 3-word phrase 3 or more times has fallen into a
loop (a fine-tuned summary that never reaches its end-of-turn token typically repeats its last clause)."""
from collections import Counter

PHRASE_WORDS = 3
REPEATS = 3


def loops(text: str) -> bool:
    """True when some run of PHRASE_WORDS whitespace words occurs REPEATS or more times (overlaps counted)."""
    words = text.split()
    phrases = Counter(tuple(words[i:i + PHRASE_WORDS]) for i in range(len(words) - PHRASE_WORDS + 1))
    return any(count >= REPEATS for count in phrases.values())


def loop_count(predictions: list[str]) -> int:
    """How many of `predictions` loop."""
    return sum(loops(text) for text in predictions)

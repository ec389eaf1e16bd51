"""The loop counter: a prediction loops when one 3-word phrase occurs 3 or more times, checked against a
brute-force count of every phrase over the word list."""
from hypothesis import given
from hypothesis import strategies as st

from fastft.metrics.loops import loop_count, loops


def brute_force(text: str) -> bool:
    words = text.split()
    starts = range(len(words) - 2)
    return any(sum(words[j:j + 3] == words[i:i + 3] for j in starts) >= 3 for i in starts)


def test_a_summary_running_on_in_a_loop_counts_and_a_normal_one_does_not():
    looping = "#Person1#은 우산을 찾으러 왔다. 우산을 찾으러 왔다. 우산을 찾으러 왔다."
    normal = "#Person1#은 우산을 찾으러 왔고 #Person2#는 우산을 찾아 준다. 우산은 파란색이다."
    assert loops(looping) and not loops(normal)
    assert loop_count([looping, normal, looping, ""]) == 2


def test_two_repeats_are_not_a_loop_and_overlapping_ones_count():
    assert not loops("a b c a b c")
    assert loops("a b c a b c a b c")
    assert loops("네 네 네 네 네")  # "네 네 네" at three overlapping places
    assert not loops("네 네 네 네")


@given(st.lists(st.sampled_from(["가", "나", "다", "#Person1#"]), max_size=14))
def test_agrees_with_a_brute_force_count(words):
    text = " ".join(words)
    assert loops(text) == brute_force(text)

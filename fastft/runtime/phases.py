"""Where a run's wall time goes: seconds per named phase, for metrics.json, report.md and the end-of-run line.

A phase entered inside another (an evaluation inside training) is taken out of the outer one, so no second is
counted twice and the phases, with "other" for the time no phase covers, add up to the run's wall time.
"""
import time
from contextlib import contextmanager

OTHER = "other"
TOTAL = "total"


class Phases:
    def __init__(self, clock=time.perf_counter):
        """`clock`: seconds as a float, any origin; the run's time starts now."""
        self._clock = clock
        self._start = clock()
        self._seconds: dict[str, float] = {}  # each phase's own time, nested phases taken out
        self._nested: list[float] = []  # per open phase, the time of the phases entered inside it

    @contextmanager
    def __call__(self, name: str):
        self._seconds.setdefault(name, 0.0)  # listed in the order the phases first started
        start = self._clock()
        self._nested.append(0.0)
        try:
            yield
        finally:
            spent = self._clock() - start
            self._seconds[name] += spent - self._nested.pop()
            if self._nested:
                self._nested[-1] += spent

    def seconds(self) -> dict[str, float]:
        """{phase: seconds} in the order the phases first started, then "other" and "total" (the time since this
        object was made)."""
        total = self._clock() - self._start
        # Never below zero but for rounding: the phases' own times cover disjoint stretches of the run.
        return {**self._seconds, OTHER: max(0.0, total - sum(self._seconds.values())), TOTAL: total}


def duration(seconds: float) -> str:
    """4.2s, 40s, 5m02s, 1h05m."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def time_line(phases: dict[str, float]) -> str:
    """One line for the end of a run: the total, then the phases from the longest down."""
    parts = sorted(((seconds, name) for name, seconds in phases.items() if name != TOTAL), reverse=True)
    return f"time: {duration(phases[TOTAL])} (" + ", ".join(f"{phase_label(name)} {duration(s)}" for s, name in parts) + ")"


def phase_label(name: str) -> str:
    """A phase's name (a metrics.json key) as people read it: eval_loss -> eval loss."""
    return name.replace("_", " ")

"""Ctrl-C and SIGTERM as a request to stop: the first one is recorded for the trainer to act on at the end of the
optimizer step (training/stop.py saves a checkpoint there and the run ends with `Stopped`); a second one ends the
process at once, which loses nothing complete because checkpoints are published atomically."""
import os
import signal
import time
from pathlib import Path
from typing import Callable

from .distributed import is_main

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Under torchrun one Ctrl-C reaches each rank twice within milliseconds: from the terminal and forwarded by torchrun.
SAME_PRESS_S = 1.0


class Stopped(Exception):
    """The run stopped on request after saving its state; the CLI exits with `exit_code` (128 + the signal)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def _say(line: str) -> None:
    # os.write, not print: a handler may run while the main thread is inside a print of its own.
    if is_main():
        os.write(2, (line + "\n").encode("utf-8", "replace"))


class StopRequests:
    """Signal handlers for the length of a `with` block (the previous ones come back after it). `received` is the
    first signal's number, or 0; `last_complete()` names what a second signal leaves behind."""

    def __init__(self, last_complete: Callable[[], Path | None], repeats_within_s: float = 0.0):
        self.received = 0
        self._at = 0.0
        self._last_complete = last_complete
        self._repeats_within_s = repeats_within_s
        self._previous = {}

    def __enter__(self):
        for number in STOP_SIGNALS:
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc):
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _handle(self, number, frame) -> None:
        now = time.monotonic()
        if not self.received:
            self.received, self._at = number, now
            _say(f"{signal.Signals(number).name}: finishing the current optimizer step, then saving a checkpoint "
                 "(Ctrl-C again to stop at once)")
            return
        if now - self._at < self._repeats_within_s:
            return
        checkpoint = self._last_complete()
        _say(f"stopped at once; {f'last complete checkpoint: {checkpoint}' if checkpoint else 'no checkpoint saved yet'}; "
             "run the same command to continue")
        # No unwinding: the step or save in progress is abandoned, and a half-written checkpoint is only a staging
        # folder that resume never reads. Exit codes follow the shell's 128 + signal.
        os._exit(128 + number)

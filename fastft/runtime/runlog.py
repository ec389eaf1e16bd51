"""A run's log: every line goes to the console and to logs/YYYYMMDD/train/train_<experiment>_<timestamp>.log.

Under torchrun / accelerate launch every rank runs the same code; only rank 0 prints and keeps the file.
"""
from datetime import datetime
from pathlib import Path

from rich.console import Console

from .distributed import is_main


class RunLog:
    def __init__(self, logs_dir: str, experiment: str, console: Console | None = None, now: datetime | None = None):
        now = now or datetime.now()
        folder = Path(logs_dir) / now.strftime("%Y%m%d") / "train"
        self.path = folder / f"train_{experiment}_{now.strftime('%Y%m%d_%H%M%S')}.log"
        self.console = console or Console(stderr=True)
        if not is_main():
            self.console.quiet = True
        self._file = None

    def open(self) -> None:
        if not is_main():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")  # append: a resumed run keeps its history

    def __call__(self, message: str) -> None:
        self.console.print(message, highlight=False, soft_wrap=True)
        if self._file:
            self._file.write(f"{datetime.now().isoformat(timespec='seconds')} {_plain(message)}\n")
            self._file.flush()

    def close(self) -> None:
        if self._file:
            self._file.close()
            self._file = None


def _plain(message: str) -> str:
    from rich.text import Text

    return Text.from_markup(message).plain

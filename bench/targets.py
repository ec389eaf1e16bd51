"""The issue's targets for fastft against hf-peft-trl, the rule that fails a system which trained nothing, and the
verdicts the report prints and `--check` enforces.

    python -m bench.targets bench/results/<run>/throughput-quick.json   # exit 1 when a target is not HIT
"""
import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .config import default_dtype
from .plan import TARGET

# Relative change of the loss on batch 0 (before any update vs after the last) at or below which a system trained
# nothing: adapters that do not move leave float noise (< 1e-6 in tests/test_bench.py); three AdamW steps at 1e-4
# moved Gemma 3 270M's from 3.37 to 2.55 in the 2026-11-25 run.
LOSS_MOVED = 1e-5
HIT, MISSED, NOT_MEASURED = "HIT", "MISSED", "not measured in this run"


def failure(row: dict) -> str | None:
    """Why a measured row trained nothing (it cannot win anything), or None."""
    if row["skipped_reason"]:
        return None
    if not row["grad_norm"]:
        return f"gradient norm {row['grad_norm']} at the last timed step"
    before, after = row["first_loss"], row["final_loss"]
    if abs(after - before) <= LOSS_MOVED * abs(before):
        return f"loss on batch 0 did not move ({before:.7g} before training, {after:.7g} after)"
    return None


@dataclass(frozen=True)
class Target:
    text: str
    checkpointing: bool  # the setting of both systems' rows
    quantity: Callable[[dict, dict], float]  # (fastft row, hf-peft-trl row) -> the measured value
    bound: float
    higher_is_better: bool

    def hit(self, value: float) -> bool:
        return value >= self.bound if self.higher_is_better else value <= self.bound


def _speed(fast, base):
    return fast["tokens_per_s"] / base["tokens_per_s"]


def _memory(fast, base):
    return fast["peak_mem_bytes"] / base["peak_mem_bytes"]


def _loss(fast, base):
    return abs(fast["final_loss"] - base["final_loss"]) / abs(base["final_loss"])


TARGETS = (
    Target("fastft >= 3x hf-peft-trl tokens/s", False, _speed, 3.0, True),
    Target("fastft >= 3x hf-peft-trl tokens/s", True, _speed, 3.0, True),
    Target("fastft <= 0.45x hf-peft-trl peak memory", False, _memory, 0.45, False),
    Target("fastft <= 0.5x hf-peft-trl peak memory", True, _memory, 0.5, False),
    Target("fastft useful MFU >= 60% of the peak measured beside its steps", False, lambda fast, _: fast["useful_mfu"], 0.6, True),
    Target("same loss after the timed steps: relative difference <= 1e-3", False, _loss, 1e-3, False),
    Target("same loss after the timed steps: relative difference <= 1e-3", True, _loss, 1e-3, False),
)


def is_target(row: dict, checkpointing: bool = False) -> bool:
    """A row of the issue's target configuration, in the device's default dtype, with checkpointing as asked."""
    return (all(row[k] == v for k, v in TARGET.items()) and abs(row["masked_frac"] - 0.9) < 0.01
            and row["gradient_checkpointing"] == checkpointing and row["dtype"] == default_dtype(row["device"]))


def target_row(rows: list[dict], system: str, checkpointing: bool) -> dict | None:
    return next((r for r in rows if r["system"] == system and is_target(r, checkpointing)), None)


def verdict(target: Target, rows: list[dict]) -> tuple[float | None, str]:
    """(measured value or None, HIT / MISSED / FAILED: why / not measured in this run)."""
    pair = {s: target_row(rows, s, target.checkpointing) for s in ("fastft", "hf-peft-trl")}
    if any(r is None or r["skipped_reason"] for r in pair.values()):
        return None, NOT_MEASURED
    for system, row in pair.items():
        why = failure(row)
        if why:
            return None, f"FAILED: {system} trained nothing: {why}"
    value = target.quantity(pair["fastft"], pair["hf-peft-trl"])
    return value, HIT if target.hit(value) else MISSED


def verdicts(rows: list[dict]) -> list[tuple[Target, float | None, str]]:
    return [(target, *verdict(target, rows)) for target in TARGETS]


def shortfalls(rows: list[dict]) -> list[str]:
    """One line per target not HIT in these rows: what --check fails on."""
    return [f"{t.text} (gradient checkpointing {'on' if t.checkpointing else 'off'}): "
            f"{'' if value is None else format(value, '.3g') + ', '}{text}"
            for t, value, text in verdicts(rows) if text != HIT]


def check(rows: list[dict]) -> int:
    """Print the verdict of every target; 1 when one is not HIT (missed, failed or not measured), else 0."""
    missed = shortfalls(rows)
    for line in missed:
        print(f"check: NOT MET: {line}")
    print(f"check: {len(TARGETS) - len(missed)} of {len(TARGETS)} targets HIT" + ("" if missed else ", passed"))
    return 1 if missed else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Check a throughput run's rows against the issue's targets.")
    parser.add_argument("results", type=Path,
                        help="throughput[-quick].json (or --json's file) written by bench/throughput.py")
    args = parser.parse_args(argv)
    try:
        data = json.loads(args.results.read_text(encoding="utf-8"))
        rows = data["rows"] if isinstance(data, dict) else data  # the full output, or --json's bare list
        rows[0]["skipped_reason"]  # noqa: B018 -- a list of rows, or the error below
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise SystemExit(f"{args.results}: not a throughput.py results file ({exc}); pass its .json output") from None
    return check(rows)


if __name__ == "__main__":
    sys.exit(main())

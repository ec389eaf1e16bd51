"""Where a run's time goes: the phase timer's arithmetic on a clock the test drives, and a real tiny run whose
metrics.json, report.md and last console line account for its wall time, measured here around the run."""
import io
import json
import time

import pytest
from rich.console import Console

from fastft.runtime.phases import Phases, duration, phase_label, time_line
from tests.factories import recipe_for
from tests.test_report import _table_rows

RUN_PHASES = {"model_resolve", "tokenization", "loading", "training", "eval_loss", "generation", "checkpoint_saving",
              "final_model_saving", "report"}
GENERATING = "evaluation: {generate_at_eval: true, max_samples: 2}\ngeneration: {max_new_tokens: 4, batch_size: 2}\n"
SIZES = ["dataset.max_train_samples=8", "dataset.max_eval_samples=4", "training.epochs=1"]


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> None:
        self.now += seconds


def test_nested_phases_are_taken_out_of_the_phase_around_them():
    clock = Clock()
    phases = Phases(clock)
    clock.wait(1.0)  # outside every phase
    with phases("training"):
        clock.wait(2.0)
        with phases("eval_loss"):
            clock.wait(3.0)
            with phases("generation"):
                clock.wait(4.0)
            clock.wait(0.5)
        clock.wait(5.0)
        with phases("checkpoint_saving"):
            clock.wait(1.5)
    clock.wait(0.25)
    with phases("eval_loss"):  # a second visit adds to the first
        clock.wait(2.0)
    assert phases.seconds() == {"training": 7.0, "eval_loss": 5.5, "generation": 4.0, "checkpoint_saving": 1.5,
                                "other": 1.25, "total": 19.25}


def test_a_phase_that_raises_still_counts():
    clock = Clock()
    phases = Phases(clock)
    with pytest.raises(OSError), phases("training"):
        with phases("checkpoint_saving"):
            clock.wait(2.0)
            raise OSError("disk full")
    clock.wait(1.0)
    assert phases.seconds() == {"training": 0.0, "checkpoint_saving": 2.0, "other": 1.0, "total": 3.0}


def test_durations_and_the_time_line_read_longest_first():
    assert [duration(s) for s in (0.04, 4.24, 40.4, 59.6, 302.0, 3900.0)] == ["0.0s", "4.2s", "40s", "1m00s", "5m02s", "1h05m"]
    line = time_line({"loading": 12.0, "training": 151.0, "eval_loss": 40.0, "other": 1.0, "total": 204.0})
    assert line == "time: 3m24s (training 2m31s, eval loss 40s, loading 12s, other 1.0s)"


@pytest.mark.slow
def test_a_run_accounts_for_its_wall_time_phase_by_phase(tmp_path, tiny_llama):
    from fastft.commands.run import run
    from fastft.config.loader import load_recipe
    from fastft.runtime.runlog import RunLog

    recipe_file = recipe_for(tmp_path, tiny_llama, GENERATING)
    recipe = load_recipe(recipe_file, SIZES)
    console = io.StringIO()
    log = RunLog(recipe.output.logs_dir, recipe.experiment, Console(file=console, width=250))
    started = time.perf_counter()
    try:
        result = run(recipe, recipe_file, log)
    finally:
        log.close()
    wall = time.perf_counter() - started

    metrics = json.loads((result.output_dir / "metrics.json").read_text(encoding="utf-8"))
    phases = metrics["phases_s"]
    assert set(phases) == RUN_PHASES | {"other", "total"}
    assert all(phases[name] > 0 for name in RUN_PHASES) and phases["other"] >= 0
    assert sum(seconds for name, seconds in phases.items() if name != "total") == pytest.approx(phases["total"], rel=1e-9)
    assert phases["total"] == pytest.approx(wall, rel=0.05)
    # Evaluations and saves are taken out of training, which still holds every optimizer step (usage.py's clock),
    # and the phases that ran inside train() cover the Trainer's own runtime of it.
    assert phases["training"] >= metrics["train_step_time_s"]
    inside_train = ("training", "eval_loss", "generation", "checkpoint_saving")
    assert sum(phases[name] for name in inside_train) >= metrics["train_runtime_s"]

    report = (result.output_dir / "report.md").read_text(encoding="utf-8")
    rows = {row[0]: row[1:] for row in _table_rows(report, "## Where the time went")}
    assert list(rows) == [phase_label(name) for name in phases]
    for name, seconds in phases.items():
        assert float(rows[phase_label(name)][1].replace(",", "")) == pytest.approx(seconds, rel=1e-3, abs=0.01)
    assert console.getvalue().rstrip().splitlines()[-1] == time_line(phases)

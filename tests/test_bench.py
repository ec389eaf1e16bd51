"""Smoke test of the benchmark harness on a tiny random Llama: one training step per system, in this process.

Checks the rows are complete, systems that cannot run say why, and the systems that run trained the same thing:
the same loss before any update and after it, and the same gradient norm. A system that trains nothing (learning
rate 0) is FAILED and cannot meet a target; bench/targets.py's check is tested on synthetic rows.
"""
import json
import math
import subprocess
import sys

import pytest

from bench import plan, targets
from bench.config import OPTIM, REPO, SYSTEMS, Config
from bench.measure import with_mfu
from bench.outputs import write_outputs
from bench.report import checkpointing_lines
from bench.run_one import FIELDS, run_config
from bench.throughput import run_meta
from tests.factories import tiny_llama_checkpoint

RUNS_ON_CPU = ("fastft", "fastft-nokernels", "hf-peft-trl")
MEASURED = ("tokens_per_s", "trained_tokens_per_s", "step_s", "peak_mem_bytes", "peak_flops_beside", "useful_mfu",
            "useful_mfu_run", "first_loss", "final_loss", "grad_norm")
PEAK = {"float32": 1e11}  # FLOP/s; any positive number will do for checking that MFU is filled in


@pytest.fixture(scope="module")
def bench_llama(tmp_path_factory):
    return tiny_llama_checkpoint(tmp_path_factory.mktemp("bench_llama"))


@pytest.fixture(scope="module")
def rows(tmp_path_factory, bench_llama):
    folder = bench_llama
    # fastft last: its kernel patches are per model instance, but in one process nothing is left to chance.
    order = [s for s in SYSTEMS if s != "fastft"] + ["fastft"]
    configs = [Config(system=s, model=str(folder), seq_len=64, batch=2, warmup=0, timed=1) for s in order]
    meta = run_meta(PEAK, PEAK, "pytest", "test")
    out = tmp_path_factory.mktemp("bench_out")
    write_outputs([run_config(cfg) for cfg in configs], meta, out, "test")
    return {row["system"]: row for row in json.loads((out / "test.json").read_text())["rows"]}, out


def test_every_system_has_a_complete_row_or_a_reason(rows):
    by_system, _ = rows
    assert set(by_system) == set(SYSTEMS)
    for system, row in by_system.items():
        assert set(FIELDS) <= set(row), system
        if row["skipped_reason"]:
            assert system not in RUNS_ON_CPU and all(row[k] is None for k in MEASURED), row
        else:
            assert all(row[k] > 0 and math.isfinite(row[k]) for k in MEASURED), row
            assert row["failed_reason"] is None, row
    assert not any(by_system[s]["skipped_reason"] for s in RUNS_ON_CPU)


def test_systems_train_the_same_thing(rows):
    by_system, _ = rows
    reference = by_system["hf-peft-trl"]
    for system in ("fastft", "fastft-nokernels"):
        row = by_system[system]
        assert row["settings"] == reference["settings"]
        assert row["first_loss"] == pytest.approx(reference["first_loss"], rel=1e-5)  # before any update
        assert row["final_loss"] == pytest.approx(reference["final_loss"], rel=1e-4)  # after one step
        assert row["grad_norm"] == pytest.approx(reference["grad_norm"], rel=1e-4)  # the step's gradients


def test_selective_checkpointing_row_trains_what_the_plain_fastft_row_trains(rows, bench_llama):
    """fastft's selective checkpointing recomputes gate and up: the same losses and gradient norm as without it;
    a system without such a mode gets a skipped row saying so, before any data is prepared."""
    plain = rows[0]["fastft"]
    row = run_config(Config(system="fastft", model=str(bench_llama), seq_len=64, batch=2, warmup=0, timed=1,
                            gradient_checkpointing="selective"))
    assert row["skipped_reason"] is None and row["gradient_checkpointing"] == "selective"
    assert row["settings"] == plain["settings"].replace("gradient checkpointing off", "gradient checkpointing selective")
    assert "selective checkpointing: lora_mlp recomputes gate and up in backward in 2 MLP blocks" in row["kernels"]
    assert (row["first_loss"], row["final_loss"], row["grad_norm"]) == (
        plain["first_loss"], plain["final_loss"], plain["grad_norm"])
    skipped = run_config(Config(system="hf-peft-trl", model="no-such-model", gradient_checkpointing="selective"))
    assert skipped["skipped_reason"].startswith("hf-peft-trl has no selective checkpointing")


def test_quick_measures_fastft_off_selective_on_beside_hf_peft_trl_off_on():
    at_target = {}
    for cfg in plan.quick():
        if cfg.seq_len == 1024 and cfg.batch == 2 and cfg.dtype is None:
            at_target.setdefault(cfg.system, []).append(cfg.gradient_checkpointing)
    assert at_target["fastft"] == [False, True, "selective"]
    assert at_target["hf-peft-trl"] == at_target["fastft-nokernels"] == [False, True]


def test_report_puts_the_three_checkpointing_settings_side_by_side():
    rows = _target_rows()
    rows.append({**rows[0], "gradient_checkpointing": "selective", "tokens_per_s": 380.0, "peak_mem_bytes": 3.0e9})
    lines = checkpointing_lines(rows)
    assert lines[2:] == [
        "| fastft | off | 400.0 | 3.26 | 1.00x | 1.000x |",
        "| fastft | selective | 380.0 | 2.79 | 0.95x | 0.857x |",
        "| fastft | on | 400.0 | 3.73 | 1.00x | 1.143x |",
        "| hf-peft-trl | off | 100.0 | 7.45 | 1.00x | 1.000x |",
        "| hf-peft-trl | on | 100.0 | 7.45 | 1.00x | 1.000x |",
    ]


def test_a_system_that_trains_nothing_is_failed(tmp_path, monkeypatch):
    # Every system's optimizer reads it. fastft's recipe refuses 0; at 1e-30 the adapters move by ~1e-30.
    monkeypatch.setitem(OPTIM, "lr", 1e-30)
    folder = tiny_llama_checkpoint(tmp_path / "llama")
    row = run_config(Config(system="hf-peft-trl", model=str(folder), seq_len=64, batch=2, warmup=0, timed=2))
    assert row["grad_norm"] > 0  # gradients flow; the optimizer step is what does nothing
    assert row["final_loss"] == pytest.approx(row["first_loss"], rel=1e-6)  # as measured, not as the rule says
    assert row["failed_reason"].startswith("loss on batch 0 did not move")


def test_report_and_plots_are_written(rows):
    _, out = rows
    report = (out / "test.md").read_text()
    # the tiny model is not the target configuration
    assert "| fastft >= 3x hf-peft-trl tokens/s | off | - | not measured in this run |" in report
    # lines of tables (separators start "|-"): targets, fastft vs hf-peft-trl at the one point, every row
    assert report.count("\n| ") == (1 + len(targets.TARGETS)) + (1 + 1) + (1 + len(SYSTEMS))
    assert sorted(p.name for p in out.glob("*.png")) == ["test-memory-vs-seq-len.png", "test-throughput-vs-seq-len.png"]


def _target_rows(changes=None) -> list[dict]:
    """fastft and hf-peft-trl at the target configuration, checkpointing off and on, meeting every target;
    changes[(system, checkpointing)] overrides fields of one row."""
    rows = []
    for on in (False, True):
        for system, speed, memory in (("fastft", 400.0, 4.0e9 if on else 3.5e9), ("hf-peft-trl", 100.0, 8.0e9)):
            row = dict(system=system, model="gemma3-270m", workload="summarization", seq_len=1024, batch=2,
                       quant="none", masked_frac=0.9, gradient_checkpointing=on, dtype="float32", device="cpu",
                       tokens_per_s=speed, peak_mem_bytes=memory, useful_mfu=0.65 if system == "fastft" else 0.16,
                       first_loss=3.4, final_loss=2.5, grad_norm=1.5, skipped_reason=None)
            rows.append({**row, **(changes or {}).get((system, on), {})})
    return rows


@pytest.mark.parametrize("beside, expected", [(2e11, 0.5), (None, 0.4)])
def test_useful_mfu_divides_by_the_peak_measured_beside_the_row_else_the_runs(beside, expected):
    row = {"dtype": "float32", "step_s": 10.0, "useful_flops_per_step": 1e12, "peak_flops_beside": beside}
    filled = with_mfu(row, {"float32": 2.5e11})  # 1e11 useful FLOP/s
    assert filled["useful_mfu"] == pytest.approx(expected)
    assert filled["useful_mfu_run"] == pytest.approx(0.4)


def test_check_passes_when_every_target_is_hit(capsys):
    assert targets.check(_target_rows()) == 0
    assert "7 of 7 targets HIT, passed" in capsys.readouterr().out


@pytest.mark.parametrize("changes, expected", [
    ({("fastft", True): {"tokens_per_s": 290.0}}, "fastft >= 3x hf-peft-trl tokens/s (gradient checkpointing on): 2.9"),
    ({("fastft", False): {"peak_mem_bytes": 3.8e9}}, "peak memory (gradient checkpointing off): 0.475, MISSED"),
    ({("fastft", True): {"peak_mem_bytes": 4.2e9}}, "peak memory (gradient checkpointing on): 0.525, MISSED"),
    ({("fastft", False): {"useful_mfu": 0.59}}, "useful MFU >= 60% of the peak measured beside its steps (gradient checkpointing off): "
                                                "0.59, MISSED"),
    ({("fastft", False): {"final_loss": 2.5 * 1.002}}, "relative difference <= 1e-3 (gradient checkpointing off): "
                                                       "0.002, MISSED"),
    ({("fastft", False): {"grad_norm": 0.0}}, "FAILED: fastft trained nothing: gradient norm 0.0"),
    ({("hf-peft-trl", True): {"final_loss": 3.4}}, "FAILED: hf-peft-trl trained nothing: loss on batch 0 did not move"),
    ({("hf-peft-trl", True): {"skipped_reason": "failed, out of memory"}}, "(gradient checkpointing on): not measured"),
])
def test_check_fails_on_each_kind_of_shortfall(changes, expected, capsys):
    assert targets.check(_target_rows(changes)) == 1
    out = capsys.readouterr().out
    assert expected in out and "passed" not in out


def test_check_cli_exit_code_and_bad_file(tmp_path):
    def run(rows_or_text):
        path = tmp_path / "results.json"
        path.write_text(rows_or_text if isinstance(rows_or_text, str) else json.dumps({"rows": rows_or_text}))
        return subprocess.run([sys.executable, "-m", "bench.targets", str(path)], capture_output=True, text=True)

    assert run(_target_rows()).returncode == 0
    missed = run(_target_rows({("fastft", False): {"tokens_per_s": 250.0}}))
    assert missed.returncode == 1 and "tokens/s (gradient checkpointing off): 2.5, MISSED" in missed.stdout
    bad = run("[]")
    assert bad.returncode == 1 and "not a throughput.py results file" in bad.stderr and "Traceback" not in bad.stderr


def test_throughput_check_exits_1_when_the_targets_are_not_measured(tmp_path):
    folder = tiny_llama_checkpoint(tmp_path / "llama")
    done = subprocess.run([sys.executable, "bench/throughput.py", "--sweeps", "target", "--systems", "hf-peft-trl",
                           "--set", f"model={folder}", "--set", "seq_len=64", "--warmup", "0", "--timed", "1",
                           "--out", str(tmp_path / "out"), "--check"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "hf-peft-trl" in done.stdout and "grad norm" in done.stdout  # the row was measured and printed
    assert "check: 0 of 7 targets HIT" in done.stdout and "not measured in this run" in done.stdout
    assert (tmp_path / "out" / "throughput.json").exists()

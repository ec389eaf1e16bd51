"""bf16 rows of the benchmark: measured where the CPU multiplies bf16 natively (the model really in bf16 in every
system), skipped elsewhere with the measured speed of a small bf16 matmul against fp32, and no bf16 peak measured
there (a 2048^3 emulated bf16 matmul takes minutes). Whether the CPU is native is fastft.runtime.cpu.native_bf16,
replaced here to stand for either kind of CPU."""
import json
import re

import pytest
import torch

from bench import machine, measure
from bench.config import Config
from bench.outputs import write_outputs
from bench.run_one import run_config
from bench.throughput import run_meta
from fastft.runtime import cpu

pytestmark = [pytest.mark.slow,  # trains the tiny Llama in six configurations
              pytest.mark.skipif(torch.cuda.is_available(), reason="bf16 rows always run on a GPU")]
RUNS = ("fastft", "fastft-nokernels", "hf-peft-trl")
# "Nx slower" where bf16 is emulated; "N.Nx faster" where the stand-in runs on a CPU with native bf16
SPEED = re.compile(r"a 512\^3 bf16 matmul ran ([\d.]+)x (slower|faster) than fp32 \(([\d.e+]+) against ([\d.e+]+) GFLOP/s\)")


def config(folder, system: str, dtype: str) -> Config:
    return Config(system=system, model=str(folder), seq_len=64, batch=2, warmup=0, timed=2, dtype=dtype)


@pytest.fixture
def emulated(monkeypatch):
    monkeypatch.setattr(cpu, "native_bf16", lambda: None)


@pytest.fixture
def native(monkeypatch):
    """A native-bf16 CPU, whose rows measure a bf16 matmul peak beside their steps: stood in for too (1 FLOP/s), as
    this CPU would take minutes over it."""
    monkeypatch.setattr(cpu, "native_bf16", lambda: "AVX512-BF16")
    monkeypatch.setattr(measure, "matmul_peak_flops", lambda device, dtype, n=0, repeats=10: 1.0)


def test_emulated_bf16_rows_are_skipped_quoting_the_matmul_speed(emulated, tiny_llama, tmp_path):
    rows = [run_config(config(tiny_llama, system, "bfloat16")) for system in RUNS]
    for row in rows:
        assert row["dtype"] == "bfloat16" and row["tokens_per_s"] is None and row["first_loss"] is None, row
        assert row["skipped_reason"].startswith("this CPU has no native bf16 matmul (no AVX512-BF16 or AMX)")
        ratio, how, bf16, fp32 = SPEED.search(row["skipped_reason"]).groups()
        # the ratio of the two speeds it quotes (each rounded to 3 digits; the ratio to 0 or 1 decimals)
        quoted = float(fp32) / float(bf16) if how == "slower" else float(bf16) / float(fp32)
        assert float(ratio) == pytest.approx(quoted, rel=1e-2, abs=0.5 if how == "slower" else 0.05), row["skipped_reason"]
    assert rows[0]["skipped_reason"] == rows[1]["skipped_reason"]  # measured once per process
    fp32 = run_config(config(tiny_llama, "fastft", "float32"))
    assert fp32["skipped_reason"] is None and fp32["tokens_per_s"] > 0
    # the report takes the skipped row without a bf16 peak
    meta = run_meta({"float32": 1e11}, {"float32": 1e11}, "pytest", "test")
    write_outputs([fp32, *rows], meta, tmp_path, "test")
    written = {row["dtype"]: row for row in json.loads((tmp_path / "test.json").read_text())["rows"]}
    assert written["bfloat16"]["useful_mfu"] is None and written["float32"]["useful_mfu"] > 0
    assert rows[0]["skipped_reason"] in (tmp_path / "test.md").read_text()


@pytest.mark.parametrize("native_cpu, measured", [(False, ["float32"]), (True, ["bfloat16", "float32"])])
def test_the_bf16_peak_is_measured_only_on_a_native_cpu(native_cpu, measured, monkeypatch):
    monkeypatch.setattr(cpu, "native_bf16", lambda: "AMX" if native_cpu else None)
    sizes = []
    monkeypatch.setattr(measure, "matmul_peak_flops", lambda device, dtype, n=0, repeats=10: sizes.append(dtype) or 1.0)
    assert sorted(machine.measure_peak(["bfloat16", "float32"])) == measured
    assert sorted(str(dtype).removeprefix("torch.") for dtype in sizes) == measured


def test_native_bf16_rows_train_the_model_in_bf16(native, tiny_llama):
    """Every system's bf16 row runs and starts from the same loss as its fp32 row to bf16 accuracy, but not the
    identical one; a system that ignored the dtype would repeat its fp32 losses."""
    for system in RUNS:
        fp32, bf16 = (run_config(config(tiny_llama, system, dtype)) for dtype in ("float32", "bfloat16"))
        assert bf16["skipped_reason"] is None and bf16["failed_reason"] is None, bf16
        assert bf16["losses"] == pytest.approx(fp32["losses"], rel=1e-2)
        assert bf16["losses"] != fp32["losses"] and bf16["grad_norm"] != fp32["grad_norm"], system
        assert bf16["grad_norm"] == pytest.approx(fp32["grad_norm"], rel=5e-2)

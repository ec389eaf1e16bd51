"""`fastft doctor` on the CPU: one line per fact, exit 0, and a broken piece reported on its line, not raised."""
import importlib.metadata
import importlib.util
import os
import subprocess
import sys

import torch

from fastft.commands import doctor


def test_doctor_on_cpu_reports_every_line_and_exits_0():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # as a user runs it: compiling Triton
    done = subprocess.run([sys.executable, "-m", "fastft", "doctor"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "device       cpu (no CUDA device): every fastft kernel runs its PyTorch path"
    for package in doctor.PACKAGES:
        if importlib.util.find_spec(package) is None:
            assert f"version      {package} not installed" in lines
        else:
            assert f"version      {package} {importlib.metadata.version(package)}" in lines
    assert f"version      torch {torch.__version__}" in lines
    bnb = next(line for line in lines if line.startswith("bnb 4-bit"))
    assert bnb.startswith("bnb 4-bit    works on cpu (NF4 quantize + matmul, relative error"), bnb
    assert "triton       compiles for sm_80 (no GPU here; offline compile; probe kernel 0 B shared memory)" in lines
    assert lines[-1] == "self-check   skipped on CPU: PyTorch paths run"


def test_a_broken_bitsandbytes_is_a_line_not_a_crash(monkeypatch):
    import bitsandbytes as bnb

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA Setup failed despite GPU being available\nmore detail")

    monkeypatch.setattr(bnb, "matmul_4bit", broken)
    assert doctor.bitsandbytes_4bit() == "FAILS on cpu: RuntimeError: CUDA Setup failed despite GPU being available"


def test_under_the_interpreter_nothing_is_compiled():
    assert os.environ["TRITON_INTERPRET"] == "1"  # tests/conftest.py
    assert doctor.triton_target().startswith("TRITON_INTERPRET=1 is set")


def test_an_absent_package_says_not_installed():
    assert doctor.version("surely-not-a-fastft-dependency") == "not installed"

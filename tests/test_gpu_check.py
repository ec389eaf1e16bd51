"""bench/gpu_check.py, the one command a GPU user runs, as a subprocess: on this CPU-only machine it must say it
needs CUDA and exit 0; --tiny runs its checks on small shapes (fastft's PyTorch path here) end to end."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, "bench/gpu_check.py", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)


def test_without_cuda_it_says_so_and_exits_0(tmp_path):
    done = _run("--json", str(tmp_path / "out.json"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "needs a CUDA GPU" in done.stdout and "nothing was checked" in done.stdout
    assert not (tmp_path / "out.json").exists()


@pytest.mark.slow  # about 10 s of CPU: transformers imports and every kernel forward and backward
def test_tiny_run_checks_every_kernel_and_the_in_place_cross_entropy(tmp_path):
    done = _run("--tiny", "--json", str(tmp_path / "out.json"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    rows = json.loads((tmp_path / "out.json").read_text())["rows"]
    kernels = {r["what"] for r in rows if r["check"] == "kernel"}
    assert kernels >= {"rms_norm(offset=0)", "rms_norm(offset=1)", "swiglu", "geglu", "apply_rope", "lora_linear",
                       "lora_mlp (swiglu)", "cross_entropy", "linear_cross_entropy"}
    assert [r["check"] for r in rows].count("ce in-place") == 1
    assert all(r["passed"] for r in rows), [r for r in rows if not r["passed"]]
    assert "PASS" in done.stdout

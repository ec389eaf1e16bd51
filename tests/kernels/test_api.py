"""fastft.kernels as other code sees it: its public names, its import isolation, and the backend env var."""
import os
import pathlib
import re
import subprocess
import sys

import pytest
import torch

from fastft.kernels.rms_norm import rms_norm
from fastft.kernels.rope import apply_rope

KERNELS_DIR = pathlib.Path(__file__).resolve().parents[2] / "kernels"
PUBLIC = ["apply_rope", "cross_entropy", "embedding", "geglu", "linear_cross_entropy", "lora_linear", "lora_mlp",
          "rms_norm", "swiglu"]


def _python(code: str) -> subprocess.CompletedProcess:
    """A clean interpreter started outside the repository, so only installed packages are importable."""
    return subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": ""})


def test_importing_kernels_loads_no_other_fastft_module():
    code = ("import sys, fastft.kernels\n"
            "print(sorted(m for m in sys.modules if m.startswith('fastft.')\n"
            "             and m != 'fastft.kernels' and not m.startswith('fastft.kernels.')))")
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_kernel_sources_never_import_fastft():
    offenders = [p.name for p in KERNELS_DIR.glob("*.py")
                 if re.search(r"^\s*(from|import)\s+fastft\b", p.read_text(), re.MULTILINE)]
    assert offenders == []


def test_no_top_level_kernels_module():
    """Our kernels/ must not be importable as `kernels`: it would shadow Hugging Face's package of that name,
    which transformers and bitsandbytes probe (that package itself, if installed, is fine)."""
    result = _python("import importlib.util as u; s = u.find_spec('kernels'); print(s.origin if s else None)")
    assert result.returncode == 0, result.stderr
    origin = result.stdout.strip()
    assert origin == "None" or not pathlib.Path(origin).resolve().is_relative_to(KERNELS_DIR), origin


def test_public_names():
    import fastft.kernels

    missing = [name for name in PUBLIC if not callable(getattr(fastft.kernels, name, None))]
    assert missing == [], f"not exported by fastft.kernels: {missing}"


def test_bogus_backend_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("FASTFT_KERNEL_BACKEND", "bogus")
    x = torch.randn(2, 3, 8)
    with pytest.raises(ValueError, match="FASTFT_KERNEL_BACKEND"):
        rms_norm(x, torch.randn(8))
    q = torch.randn(1, 2, 3, 8)
    with pytest.raises(ValueError, match="FASTFT_KERNEL_BACKEND"):
        apply_rope(q, q, torch.randn(1, 3, 8), torch.randn(1, 3, 8))

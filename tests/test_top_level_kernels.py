"""The repository's kernels/ folder is fastft.kernels. From a checkout's root (where `python -m pytest` and the bench
run) it also answers to the top-level name `kernels`, Hugging Face's package, which transformers >= 5.25 requires and
imports (and bitsandbytes probes): that name must reach the installed package, or be missing as it would be."""
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _in_checkout(code: str, *flags: str) -> subprocess.CompletedProcess:
    """`python <flags> -c code` with the checkout's root first on sys.path, as `python -m` from there puts it."""
    return subprocess.run([sys.executable, *flags, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=120)


def _installed(name: str) -> bool:
    try:
        importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(not _installed("kernels"), reason="Hugging Face's kernels package is not installed")
def test_the_top_level_name_reaches_hugging_faces_package():
    done = _in_checkout("import kernels, fastft.kernels as k; print(kernels.__file__); print(k.lora_mlp.__module__)")
    assert done.returncode == 0, done.stderr
    top, ours = done.stdout.split()
    assert Path(top).resolve().parent.name == "kernels" and REPO not in Path(top).resolve().parents
    assert ours == "fastft.kernels.lora"


@pytest.mark.skipif(not _installed("kernels"), reason="Hugging Face's kernels package is not installed")
def test_transformers_hub_kernels_imports_from_the_checkout():
    """What failed with transformers 5.25: `from kernels import CUDAProperties` found this folder."""
    done = _in_checkout("import transformers.integrations.hub_kernels")
    assert done.returncode == 0, done.stderr[-2000:]


def test_without_the_package_the_name_reads_as_absent():
    """-S: no site-packages, so no Hugging Face package. transformers <= 5.17 imports a `kernels` it finds without
    metadata and counts one with neither __file__ nor __version__ as absent; probes import names from it."""
    code = ("import importlib.util, kernels\n"
            "print(getattr(kernels, '__file__', None), getattr(kernels, '__version__', 'N/A'),"
            " importlib.util.find_spec('kernels').origin)\n"
            "try:\n    from kernels import get_kernel\nexcept ImportError as e:\n    print(type(e).__name__)\n"
            "import kernels.utils")
    done = _in_checkout(code, "-S")
    assert done.stdout.split() == ["None", "N/A", "None", "ImportError"], done.stderr
    assert "ModuleNotFoundError: No module named 'kernels.utils'" in done.stderr

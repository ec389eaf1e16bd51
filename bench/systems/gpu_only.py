"""Why a GPU-only system cannot run here: the missing package and/or the missing GPU, both when both."""
from importlib.util import find_spec


def missing(package: str, pip_name: str, needs_gpu: str) -> str | None:
    import torch

    reasons = []
    if find_spec(package) is None:
        reasons.append(f"{pip_name} is not installed")
    if not torch.cuda.is_available():
        reasons.append(f"{needs_gpu} and none is present")
    return "; ".join(reasons) or None

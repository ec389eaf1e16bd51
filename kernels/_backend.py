"""Which implementation a kernel call runs: Triton or the PyTorch version of the same algorithm.

Read at every call (not at import) so tests and users can switch with an environment variable.
"""
import os

import torch

_CHOICES = ("auto", "triton", "torch")


def interpreting() -> bool:
    """True when Triton runs kernels through its CPU interpreter (must be set before triton is imported)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def backend_choice() -> str:
    choice = os.environ.get("FASTFT_KERNEL_BACKEND", "auto").strip().lower() or "auto"
    if choice not in _CHOICES:
        raise ValueError(
            f"FASTFT_KERNEL_BACKEND={choice!r} is not one of {', '.join(_CHOICES)}; unset it or pick one of those."
        )
    return choice


def use_triton(*tensors: torch.Tensor) -> bool:
    """CUDA tensors go to Triton; CPU tensors to PyTorch unless the interpreter is on or Triton is forced."""
    choice = backend_choice()
    if choice != "auto":
        return choice == "triton"
    if any(t is not None and t.is_cuda for t in tensors):
        return True
    return interpreting()

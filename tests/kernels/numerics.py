"""Shared numeric checks for kernel tests: relative error as the issue defines it."""
import torch

TOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref||, computed in fp64."""
    out, ref = out.detach().double(), ref.detach().double()
    denom = ref.norm().item()
    diff = (out - ref).norm().item()
    return diff if denom == 0.0 else diff / denom


def assert_rel_close(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype = torch.float32, tol: float = None, name: str = ""):
    assert out.shape == ref.shape, f"{name}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    assert torch.isfinite(out).all(), f"{name}: non-finite values (unwritten output?)"
    err = rel_err(out, ref)
    limit = TOL[dtype] if tol is None else tol
    assert err <= limit, f"{name}: relative error {err:.3e} > {limit:.0e}"


def poison_(t: torch.Tensor) -> torch.Tensor:
    """Fill an output buffer with NaN so any element a kernel forgets to write fails the check."""
    return t.fill_(float("nan"))

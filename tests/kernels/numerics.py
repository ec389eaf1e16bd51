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


def assert_as_accurate_as(out: torch.Tensor, ref: torch.Tensor, exact: torch.Tensor, name: str = "",
                          factor: float = 2.0):
    """out is within fp32 tolerance of the exact (fp64) result, or no more than `factor` times as far from it as
    the fp32 reference is. For long fp32 reductions (a gradient summed over a 262,144-row vocabulary), whose
    error depends on the summation order: two correct fp32 orders can each be 1e-5 from the truth, so comparing
    them with each other tests the order, not the kernel."""
    assert torch.isfinite(out).all(), f"{name}: non-finite values (unwritten output?)"
    err, ref_err = rel_err(out, exact), rel_err(ref, exact)
    limit = max(TOL[torch.float32], factor * ref_err)
    assert err <= limit, (f"{name}: relative error {err:.3e} from the fp64 result > {limit:.3e} "
                          f"(max of {TOL[torch.float32]:.0e} and {factor} x PyTorch fp32's {ref_err:.3e})")


def poison_(t: torch.Tensor) -> torch.Tensor:
    """Fill an output buffer with NaN so any element a kernel forgets to write fails the check."""
    return t.fill_(float("nan"))

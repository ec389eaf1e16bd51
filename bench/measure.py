"""Timing and the matmul peak that MFU is measured against (peak memory: fastft.training.usage)."""
import resource
import statistics
import time

import torch


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_peak_flops(device: str, dtype: torch.dtype, n: int = 0, repeats: int = 10) -> float:
    """Best FLOP/s of an n x n x n matmul in the compute dtype on this device: the 'peak' of MFU.
    Measured rather than taken from a spec sheet, so MFU is relative to what this machine actually sustains."""
    n = n or (8192 if device == "cuda" else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for i in range(repeats + 2):  # the first two warm up threads, caches and clocks
        sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        if i >= 2:
            best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best


def timed_steps(run, warmup: int, timed: int, device: str) -> tuple[list[float], list[float]]:
    """(loss of every step, seconds of each timed step). Step i trains on batch i; warm-up steps are not timed."""
    losses, seconds = [], []
    for i in range(warmup + timed):
        sync(device)
        start = time.perf_counter()
        losses.append(run.step(i))  # returns a Python float: the step has finished when it returns
        sync(device)
        if i >= warmup:
            seconds.append(time.perf_counter() - start)
    return losses, seconds


def median(values: list[float]) -> float:
    return statistics.median(values)


def limit_address_space(max_bytes: int) -> None:
    """Make an over-large configuration fail with an allocation error in its own process instead of waking the
    kernel's OOM killer, which may pick another process on a shared machine."""
    resource.setrlimit(resource.RLIMIT_AS, (max_bytes, max_bytes))


def with_mfu(row: dict, peak_flops: dict[str, float]) -> dict:
    """A measured row's useful FLOP/s over the peak its own process measured right after its timed steps
    (useful_mfu: the machine's speed when the row ran; a VM's drifts by a fifth within one run) and over the run's
    best peak in its dtype, measured before and after all rows (useful_mfu_run)."""
    if row.get("skipped_reason") or not row.get("step_s"):
        return {**row, "useful_mfu": None, "useful_mfu_run": None}
    flops, run_peak = row["useful_flops_per_step"] / row["step_s"], peak_flops[row["dtype"]]
    return {**row, "useful_mfu": flops / (row.get("peak_flops_beside") or run_peak), "useful_mfu_run": flops / run_peak}

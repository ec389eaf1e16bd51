"""What this run measured on: device name, CPU, memory, library versions, and the matmul peak."""
import datetime
import functools
import os
import platform
import re
from importlib.metadata import PackageNotFoundError, version

from .config import REPO, device

LIBRARIES = ("torch", "transformers", "peft", "trl", "bitsandbytes", "triton")


def device_name() -> str:
    import torch

    if device() == "cuda":
        return torch.cuda.get_device_name(0)
    return f"CPU, {cpu_model()}"


def device_slug() -> str:
    """The folder name of this device under bench/results/: 'cpu' or the GPU's name, lower-case with dashes."""
    return "cpu" if device() == "cpu" else re.sub(r"[^a-z0-9]+", "-", device_name().lower()).strip("-")


def results_dir():
    """bench/results/<device>-<date>/: where a run's outputs go unless --out says otherwise."""
    return REPO / "bench" / "results" / f"{device_slug()}-{datetime.date.today():%Y-%m-%d}"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        return names[0] if names else platform.processor()
    except OSError:
        return platform.processor() or "unknown CPU"


def total_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def machine_text() -> str:
    import torch

    from fastft.runtime.cpu import native_bf16

    cores = f"{os.cpu_count()} logical cores ({torch.get_num_threads()} torch threads)"
    # two CPUs of one model name differ in what they run (this project's AMD EPYCs: AVX2 only, and AVX-512 with bf16)
    isa = f"torch's CPU kernels: {torch.backends.cpu.get_cpu_capability()}, native bf16: {native_bf16() or 'none'}"
    text = f"{cpu_model()} ({isa}), {cores}, {total_memory_bytes() / 1024**3:.0f} GiB RAM"
    if device() == "cuda":
        props = torch.cuda.get_device_properties(0)
        text = f"{props.name} ({props.total_memory / 1024**3:.0f} GiB); host: {text}"
    return text


def software_text() -> str:
    def v(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return f"Python {platform.python_version()}, " + ", ".join(f"{name} {v(name)}" for name in LIBRARIES)


def busy_warning(load: float, peak_before: dict | None = None, peak_after: dict | None = None) -> str:
    """Why the timings may be distorted, or "" when the machine looked quiet. With every core busy, OpenMP threads
    wait on each other's time slices: steps measured here ran 3-35x slower while other work was running."""
    notes = []
    if load > 0.25 * (os.cpu_count() or 1):  # a quarter of the cores: 0.5 on this project's 2-core machines
        notes.append(f"the 1-minute load average was {load:.1f} on {os.cpu_count()} cores when the run started")
    for dtype, before in (peak_before or {}).items():
        after = peak_after[dtype]
        if abs(after - before) > 0.1 * max(before, after):
            notes.append(f"the {dtype} matmul peak changed from {before / 1e9:.0f} to {after / 1e9:.0f} GFLOP/s "
                         "during the run")
    return "WARNING, timings distorted by other work on the machine: " + "; ".join(notes) if notes else ""


def measure_peak(dtypes) -> dict[str, float]:
    """FLOP/s of the best matmul in each dtype the run's rows use (each row's MFU divides by its own dtype's); none
    for an emulated dtype, whose rows are skipped (a 2048^3 emulated bf16 matmul alone takes minutes)."""
    import torch

    from .measure import matmul_peak_flops

    return {name: matmul_peak_flops(device(), getattr(torch, name)) for name in dtypes if not _emulated(name)}


def dtype_unavailable(dtype: str) -> str | None:
    """Why rows in this dtype are not measured on this machine, or None: bf16 on a CPU without native bf16 matmuls,
    with the speed of a small bf16 matmul against fp32 measured here."""
    return _emulated_bf16_speed() if _emulated(dtype) else None


def _emulated(dtype: str) -> bool:
    from fastft.runtime.cpu import native_bf16

    return dtype == "bfloat16" and device() == "cpu" and native_bf16() is None


@functools.lru_cache(maxsize=None)
def _emulated_bf16_speed(n: int = 512) -> str:
    import torch

    from .measure import matmul_peak_flops

    fp32, bf16 = (matmul_peak_flops("cpu", dtype, n, repeats=3) for dtype in (torch.float32, torch.bfloat16))
    speed = f"{fp32 / bf16:.0f}x slower" if fp32 >= bf16 else f"{bf16 / fp32:.1f}x faster"
    return (f"this CPU has no native bf16 matmul (no AVX512-BF16 or AMX): a {n}^3 bf16 matmul ran {speed} than fp32 "
            f"({bf16 / 1e9:.3g} against {fp32 / 1e9:.3g} GFLOP/s), so model.dtype auto means fp32 on it")


def peak_what() -> str:
    return "2048^3 CPU matmul" if device() == "cpu" else "8192^3 GPU matmul"


def memory_what() -> str:
    return ("peak RSS of the configuration's process (model load included)" if device() == "cpu"
            else "torch.cuda.max_memory_allocated over the configuration's process")

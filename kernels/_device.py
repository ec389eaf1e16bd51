"""What a launch may use on the device that holds its tensors.

Every launch-size decision in fastft.kernels (tile sizes, stages, row blocks, chunk sizes) reads the device only
through these functions, so that tests/kernels/gpu_compile.py can patch them to stand in for an sm_80/86/89/90
GPU while the wrappers run on CPU tensors and each launch is compiled instead of run.
"""
import contextlib

import torch

# Opt-in shared memory per block on the architectures fastft supports; used when no CUDA device answers
# (Triton's CPU interpreter), where the limit only matters for choosing the same tiles a GPU would.
DEFAULT_SHARED_MEMORY = 101_376  # sm_86 / sm_89, the smallest of the supported targets


def shared_memory_limit(device: torch.device) -> int:
    """Bytes of shared memory one program may use on `device` (the opt-in maximum per block)."""
    if device.type != "cuda":
        return DEFAULT_SHARED_MEMORY
    return torch.cuda.get_device_properties(device).shared_memory_per_block_optin


def multiprocessor_count(device: torch.device) -> int:
    """Streaming multiprocessors on `device`; grid sizing aims to fill them."""
    if device.type != "cuda":
        return 108  # an A100's count: a neutral stand-in for the interpreter
    return torch.cuda.get_device_properties(device).multi_processor_count


def compute_capability(device: torch.device) -> tuple[int, int]:
    if device.type != "cuda":
        return (8, 6)
    return torch.cuda.get_device_capability(device)


def device_guard(tensor: torch.Tensor):
    """Launch on the tensor's own GPU (model parallelism via device_map puts layers on several)."""
    if tensor.is_cuda:
        return torch.cuda.device(tensor.device)
    return contextlib.nullcontext()

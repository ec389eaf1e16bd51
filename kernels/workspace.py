"""Temporaries carved from one buffer that stays mapped, for an op that makes the same large ones in every block.

On the CPU every tensor comes from malloc. glibc hands large freed blocks back to the OS (and fastft's loss trims
the heap before the LM head), so each fresh [tokens, intermediate] temporary faults its pages in again: on Gemma 3
270M (seq 1024 x 2, fp32) a `gelu(gate) * up` into new memory took 13 ms, into reused memory ~1 ms, and a training
step faulted in ~1 GiB. CUDA's caching allocator reuses blocks already, so there the temporaries are plain tensors.
"""
import math
import threading

import torch

_ALIGN = 64  # bytes: each temporary starts on a cache line, as malloc'd tensors do
_held = threading.local()  # the buffer of this thread: an op's backward runs on the thread that called backward()


def workspace(shape, dtypes, device: torch.device) -> list[torch.Tensor | None]:
    """On the CPU, one uninitialised tensor of `shape` per dtype in `dtypes`: views of this thread's buffer, which
    the next call hands out again, so use them before that call and never return one from the op (the buffer grows
    to the largest request and is kept). Elsewhere None for each: the op allocates as it would without one."""
    if device.type != "cpu":
        return [None] * len(dtypes)
    count = math.prod(shape)
    sizes = [count * dtype.itemsize for dtype in dtypes]
    starts = [0]
    for size in sizes[:-1]:
        starts.append(starts[-1] + -(-size // _ALIGN) * _ALIGN)
    buffer = _buffer(starts[-1] + sizes[-1])
    return [buffer[start:start + size].view(dtype).view(shape) for start, size, dtype in zip(starts, sizes, dtypes)]


def _buffer(nbytes: int) -> torch.Tensor:
    if getattr(_held, "buffer", None) is None or _held.buffer.numel() < nbytes:
        _held.buffer = None  # the old buffer goes before the larger one comes: never both at once
        _held.buffer = torch.empty(nbytes, dtype=torch.uint8)
    return _held.buffer

"""Handing the C heap's free pages back to the OS (glibc's malloc_trim), where a process's resident size matters.

PyTorch's CPU tensors come from malloc. glibc keeps freed blocks in its heap for reuse, so a process that freed
memory stays as large as it was: after frozen weights are replaced by narrower copies, or at a training step's
peak, where blocks freed earlier in the step lie unused between live ones.
"""
import ctypes
import sys


def return_freed_pages() -> None:
    """malloc_trim(0): glibc gives back the pages of every free block, not only the heap's top; nothing elsewhere
    (musl, macOS, Windows)."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None) if sys.platform == "linux" else None
    if trim is not None:
        trim(0)

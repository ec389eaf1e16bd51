"""Throughput and peak memory of a training run, for metrics.json.

Tokens are the non-padding tokens the Trainer counts (`include_num_input_tokens_seen="non_padding"`, set in
args.py); seconds are the time inside optimizer steps (forward, backward, optimizer), so evaluation, checkpoint
saving and batch collation do not dilute the rate. A resumed run measures only its own session.
"""
import resource
import sys
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

GIB = 2**30
_CLEAR_REFS = Path("/proc/self/clear_refs")


def peak_memory_bytes(device: str) -> int:
    """CUDA: peak bytes allocated by torch in this process. CPU: peak resident set of this process."""
    if device == "cuda":
        return int(torch.cuda.max_memory_allocated())
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def reset_peak_memory(device: str) -> str:
    """Start a new peak, so runs that share a process (a sweep) each report their own. Returns the peak's kind:
    "cuda", "rss", or "rss_since_process_start" where the OS cannot reset the resident-set peak."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return "cuda"
    try:
        _CLEAR_REFS.write_text("5")  # Linux >= 4.0: resets the peak resident set (VmHWM, which ru_maxrss reads)
    except OSError:
        return "rss_since_process_start"
    return "rss"


class UsageMeter(TrainerCallback):
    def __init__(self):
        self.step_seconds = 0.0
        self.tokens = 0
        self.peak_bytes = 0
        self.peak_kind = ""
        self._device = "cpu"
        self._tokens_at_start = 0
        self._step_started = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self._device = args.device.type
        self._tokens_at_start = state.num_input_tokens_seen
        self.peak_kind = reset_peak_memory(self._device)

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._device == "cuda":  # the optimizer step is queued, not finished, when this is called
            torch.cuda.synchronize()
        self.step_seconds += time.perf_counter() - self._step_started

    def on_train_end(self, args, state, control, **kwargs):
        self.tokens = state.num_input_tokens_seen - self._tokens_at_start
        self.peak_bytes = peak_memory_bytes(self._device)

    def metrics(self) -> dict:
        return {
            "train_tokens": self.tokens,
            "train_step_time_s": self.step_seconds,
            "train_tokens_per_s": self.tokens / self.step_seconds if self.step_seconds else None,
            "peak_memory_gib": self.peak_bytes / GIB,
            "peak_memory_kind": self.peak_kind,
        }

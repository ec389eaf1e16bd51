"""Peak extra memory of a block of tensor code: bytes allocated inside it and alive at the same time.

CUDA has an allocator statistic for this. The CPU allocator has none, so on CPU every aten op's outputs are
recorded (through a dispatch mode, which also sees the ops autograd runs in backward) with a weak reference to
their storage; storages that died are dropped as later ops run. Views, in-place and out= results reuse a storage
and add nothing.
"""
import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class _StoragePeak(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        # Outputs on an input's storage (views, in-place and out= results) allocate nothing new.
        inputs = {StorageWeakRef(t.untyped_storage()).cdata for t in _tensors((args, kwargs))}
        out = func(*args, **kwargs)
        self._drop_freed()  # first, so a new storage at a freed one's address is not mistaken for it
        for tensor in _tensors(out):
            if StorageWeakRef(tensor.untyped_storage()).cdata not in inputs:
                self._add(tensor.untyped_storage())
        return out

    def _add(self, storage) -> None:
        ref = StorageWeakRef(storage)
        if ref.cdata not in self.live:
            self.live[ref.cdata] = (ref, storage.nbytes())
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)

    def _drop_freed(self) -> None:
        for key, (ref, size) in list(self.live.items()):
            if ref.expired():
                del self.live[key]
                self.current -= size


def _tensors(tree) -> list[torch.Tensor]:
    return [value for value in tree_leaves(tree) if isinstance(value, torch.Tensor)]


def peak_extra_bytes(fn, device: str) -> int:
    """Peak bytes fn() allocates above what existed when it started (its results and input gradients included)."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    tracker = _StoragePeak()
    with tracker:
        fn()
    return tracker.peak

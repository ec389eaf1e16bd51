"""kernels.workspace: the CPU temporaries of an op, carved from one buffer per thread that later calls reuse."""
import threading

import torch

from fastft.kernels.workspace import workspace


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def test_tensors_have_the_shape_and_dtypes_asked_for_and_do_not_overlap():
    parts = workspace((3, 5), (torch.float32, torch.bfloat16, torch.float32), torch.device("cpu"))
    assert [(tuple(t.shape), t.dtype) for t in parts] == [((3, 5), torch.float32), ((3, 5), torch.bfloat16),
                                                         ((3, 5), torch.float32)]
    spans = sorted((t.data_ptr(), t.data_ptr() + t.numel() * t.itemsize) for t in parts)
    assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:]))
    assert all(t.data_ptr() % 64 == 0 and t.is_contiguous() for t in parts)
    for i, t in enumerate(parts):  # writable and independent
        t.fill_(i)
    assert [float(t[2, 4]) for t in parts] == [0.0, 1.0, 2.0]


def test_later_calls_reuse_the_buffer_and_grow_it_only_when_asked_for_more():
    cpu = torch.device("cpu")
    first = workspace((64, 64), (torch.float32,), cpu)[0]
    again = workspace((32, 64), (torch.float32, torch.float32), cpu)
    assert {_storage(t) for t in again} == {_storage(first)}
    grown = workspace((256, 64), (torch.float32,), cpu)[0]
    assert grown.untyped_storage().nbytes() >= 256 * 64 * 4
    assert _storage(workspace((64, 64), (torch.float32,), cpu)[0]) == _storage(grown)


def test_each_thread_has_its_own_buffer():
    cpu = torch.device("cpu")
    here = _storage(workspace((16, 16), (torch.float32,), cpu)[0])
    seen = []
    thread = threading.Thread(target=lambda: seen.append(_storage(workspace((16, 16), (torch.float32,), cpu)[0])))
    thread.start()
    thread.join()
    assert seen and seen[0] != here


def test_off_the_cpu_the_op_allocates_its_own():
    assert workspace((4, 4), (torch.float32, torch.float16), torch.device("meta")) == [None, None]

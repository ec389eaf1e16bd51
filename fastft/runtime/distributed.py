"""Which process this is under torchrun / accelerate launch, and how rank 0's decisions reach the other ranks.

A launcher sets RANK / WORLD_SIZE / LOCAL_RANK; a plain `fastft run` is rank 0 of a world of one, every helper here
is then a no-op and torch is not even imported (the CLI imports this module for every command).
"""
import os
from typing import Callable, TypeVar

from ..errors import FastftError

T = TypeVar("T")


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def init_process_group() -> None:
    """Join the launcher's process group before the first collective. Joining through accelerate's state, which the
    Trainer reuses, picks the backend it would pick: nccl on GPUs, gloo on CPUs, DeepSpeed's comm under its plugin."""
    import torch

    if world_size() == 1 or torch.distributed.is_initialized():
        return
    from accelerate import PartialState

    PartialState(cpu=not torch.cuda.is_available())


def barrier() -> None:
    if world_size() > 1:
        import torch

        init_process_group()
        torch.distributed.barrier()


def max_over_ranks(value: int) -> int:
    """The largest `value` any rank holds; every rank must call it at the same point."""
    if world_size() == 1:
        return value
    import torch

    init_process_group()
    on_gpu = torch.distributed.get_backend() == "nccl"  # nccl reduces GPU tensors only
    tensor = torch.tensor([value], device=f"cuda:{torch.cuda.current_device()}" if on_gpu else "cpu")
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return int(tensor.item())


def main_decides(action: Callable[[], T]) -> T:
    """Run `action` on rank 0 only; every rank returns its result, or raises the FastftError it raised, so a refusal
    ends all ranks with the same message instead of leaving them waiting at the next collective."""
    outcome = [None]
    if is_main():
        try:
            outcome[0] = ("ok", action())
        except FastftError as error:
            # Sent as its parts: pickling an exception keeps only its first argument.
            outcome[0] = ("error", (error.message, error.where, error.hint))
    if world_size() > 1:
        import torch

        init_process_group()
        torch.distributed.broadcast_object_list(outcome, src=0)
    kind, value = outcome[0]
    if kind == "error":
        error = FastftError(*value)
        error.on_every_rank = True
        raise error
    return value


def leave_together(error: FastftError) -> None:
    """Called after printing an error: when every rank raised it, wait until all have printed it, because torchrun
    stops the remaining ranks as soon as one exits with an error."""
    if getattr(error, "on_every_rank", False):
        barrier()

"""Tile sizes and pipeline depth of the LoRA kernels, sized to the shared memory of the device that holds the tensors.

Each kernel accumulates an [a, b] output tile over a reduction in steps of k, staging an [a, k] and a [k, b]
operand tile in shared memory per pipeline stage. shared_bytes() bounds what Triton allocates for such a launch
(tests/kernels/gpu_compile.py compiles every launch for sm_80/86/89/90 and checks the real figure); each kernel
takes the first of its candidates, in order of preference, whose bound fits the device's limit. The rank side of
a tile is capped, so any rank runs (the grid or the reduction loop covers the rest).
"""
from dataclasses import dataclass

import torch
import triton

from . import _device

RANK_BLOCK_MAX = 128  # widest rank tile; larger ranks take several tiles
_STAGES = (4, 3, 2)


@dataclass(frozen=True)
class Tiles:
    """An [a, b] output tile accumulated over steps of k, with its warps and software-pipeline stages."""

    a: int
    b: int
    k: int
    warps: int
    stages: int


def shared_bytes(tiles: Tiles, dtype: torch.dtype, masked_operand: str = "") -> int:
    """Upper bound on the shared memory of one program: `stages` buffers of both operand tiles, plus, when
    dropout rewrites the operand named by masked_operand ("a" or "b") in registers, one more copy of it
    (it reaches the dot through a layout conversion instead of straight from the pipeline)."""
    size = torch.empty((), dtype=dtype).element_size()
    a_tile, b_tile = tiles.a * tiles.k * size, tiles.k * tiles.b * size
    extra = {"": 0, "a": a_tile, "b": b_tile}[masked_operand]
    return tiles.stages * (a_tile + b_tile) + extra


def rank_block(r: int) -> int:
    """The rank side of a tile: r rounded up to a power of two (tl.dot needs >= 16), at most RANK_BLOCK_MAX."""
    return min(RANK_BLOCK_MAX, max(16, triton.next_power_of_2(r)))


def _k_steps(dtype: torch.dtype) -> tuple[int, ...]:
    """Reduction steps to try, widest first: 256 bytes of a row, then 128, then 64."""
    size = torch.empty((), dtype=dtype).element_size()
    return tuple(step // size for step in (256, 128, 64))


def _warps(tiles_a: int, tiles_b: int, masked_elements: int, dtype: torch.dtype) -> int:
    """8 warps where 4 would leave a thread >= 96 accumulator elements, counting each element of a dropout-masked
    tile twice: its hash runs in registers beside the accumulator (4 warps spilled at bf16 64 x 16 + 64 x 128).
    Always 8 for fp32, whose IEEE dot (torch's default precision) holds its operand tiles in registers too."""
    big = tiles_a * tiles_b + 2 * masked_elements >= 96 * 128
    return 8 if big or dtype == torch.float32 else 4


def _first_fitting(candidates, device, dtype, masked_operand: str) -> Tiles:
    limit = _device.shared_memory_limit(device)
    for tiles in candidates:
        if shared_bytes(tiles, dtype, masked_operand) <= limit:
            return tiles
    raise RuntimeError(f"no LoRA tile fits {limit} bytes of shared memory on {device}")  # below any CUDA GPU's


def skinny_tiles(device, dtype, r: int, dropout: bool) -> Tiles:
    """out[M, r] = drop(x) @ p: 64 rows by the rank block, reducing over the input features."""
    b = rank_block(r)
    candidates = [Tiles(a, b, k, _warps(a, b, a * k if dropout else 0, dtype), stages)
                  for a in (64, 32) for k in _k_steps(dtype) for stages in _STAGES]
    return _first_fitting(candidates, device, dtype, "a" if dropout else "")


def lowrank_add_tiles(device, dtype, r: int) -> Tiles:
    """out[M, N] += drop(l @ u): the reduction is the rank, a few steps at most, so two stages suffice."""
    k = min(_k_steps(dtype)[1], max(16, triton.next_power_of_2(r)))  # fp32 at 64 spilled 10 KB on sm_80
    candidates = [Tiles(64, n, k, 4, 2) for n in (128, 64)] + [Tiles(32, 64, 16, 4, 2)]
    return _first_fitting(candidates, device, dtype, "")


def tn_tiles(device, dtype, p: int, q: int, dropout: bool) -> Tiles:
    """out[p, q] = u.T @ drop(v), reducing over rows: the rank side (the smaller of p, q) gets the rank block."""
    wide = (128, 64)
    if p <= q:
        shapes = [(rank_block(p), w) for w in wide]
    else:
        shapes = [(w, rank_block(q)) for w in wide]
    candidates = [Tiles(a, b, k, _warps(a, b, k * b if dropout else 0, dtype), stages)
                  for a, b in shapes for k in _k_steps(dtype)[1:] for stages in _STAGES]
    return _first_fitting(candidates, device, dtype, "b" if dropout else "")

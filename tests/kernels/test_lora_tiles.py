"""LoRA tile selection: every choice fits the shared memory of each supported GPU, and the kernels run with those
choices (in the interpreter) at ranks up to 256. That the estimate bounds what Triton really allocates is checked
by compiling each launch for the real targets: python -m tests.kernels.gpu_compile --op lora.
"""
import pytest
import torch

from fastft.kernels import _device, lora, lora_tiles, triton_lora
from tests.kernels.numerics import assert_rel_close
from tests.kernels.test_lora import forward_backward, triton_keep_mask

# Opt-in shared memory per block and SM counts: A100 (sm_80), RTX A6000 (sm_86), L4 (sm_89), H100 SXM (sm_90).
GPUS = {"sm_80": (166_912, 108), "sm_86": (101_376, 84), "sm_89": (101_376, 58), "sm_90": (232_448, 132)}
RANKS = (8, 16, 64, 128, 256)
DTYPES = (torch.bfloat16, torch.float16, torch.float32)


@pytest.fixture(params=sorted(GPUS))
def gpu(request, monkeypatch):
    """Makes the kernels size their launches as on that GPU."""
    shared, sms = GPUS[request.param]
    monkeypatch.setattr(_device, "shared_memory_limit", lambda device: shared)
    monkeypatch.setattr(_device, "multiprocessor_count", lambda device: sms)
    return shared, sms


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("r", RANKS)
def test_every_choice_fits_and_covers_the_rank(gpu, dtype, r):
    shared, _ = gpu
    cpu = torch.device("cpu")
    for dropout in (False, True):
        skinny = lora_tiles.skinny_tiles(cpu, dtype, r, dropout)
        assert lora_tiles.shared_bytes(skinny, dtype, "a" if dropout else "") <= shared
        for p, q in ((r, 3072), (4096, r)):  # dA = dxa.T @ x, dB = dy.T @ xa
            tn = lora_tiles.tn_tiles(cpu, dtype, p, q, dropout)
            assert lora_tiles.shared_bytes(tn, dtype, "b" if dropout else "") <= shared
            assert min(tn.a, tn.b) <= lora_tiles.RANK_BLOCK_MAX
    add = lora_tiles.lowrank_add_tiles(cpu, dtype, r)
    assert lora_tiles.shared_bytes(add, dtype) <= shared
    assert min(r, 16) <= skinny.b <= lora_tiles.RANK_BLOCK_MAX


def test_larger_memory_never_gets_a_smaller_pipeline():
    """The choice is the largest that fits: a GPU with more shared memory stages at least as many bytes."""
    cpu = torch.device("cpu")
    for dtype in DTYPES:
        for r in RANKS:
            staged = []
            for shared in sorted({s for s, _ in GPUS.values()}):
                with pytest.MonkeyPatch.context() as patch:
                    patch.setattr(_device, "shared_memory_limit", lambda device, s=shared: s)
                    staged.append(lora_tiles.shared_bytes(lora_tiles.skinny_tiles(cpu, dtype, r, True), dtype, "a"))
            assert staged == sorted(staged), (dtype, r, staged)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rank_256_with_dropout_matches_reference(gpu, dtype, triton_backend):
    """lora_linear at r=256 with each GPU's tiles and splits, against x @ W.T + b + s * drop(x) @ A.T @ B.T in fp64."""
    p, rows, n_in, n_out, r = 0.1, 96, 300, 160, 256
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, n_in, generator=gen).to(dtype)
    weight = torch.randn(n_out, n_in, generator=gen).to(dtype)
    a = torch.randn(r, n_in, generator=gen) / n_in**0.5
    b = torch.randn(n_out, r, generator=gen) / r**0.5
    bias = torch.randn(n_out, generator=gen).to(dtype)
    dy = torch.randn(rows, n_out, generator=gen).to(dtype)
    torch.manual_seed(3)
    out = forward_backward(lambda x, a, b, bias: lora.lora_linear(x, weight, a, b, 0.5, bias, p), [x, a, b, bias], dy)
    torch.manual_seed(3)
    keep = triton_keep_mask(lora.draw_dropout_seed(), p, rows, n_in)
    w64 = weight.double()
    reference = lambda x, a, b, bias: x @ w64.T + bias + 0.5 * ((x * keep / (1 - p)) @ a.T) @ b.T
    ref = forward_backward(reference, [t.double() for t in (x, a, b, bias)], dy.double())
    for got, want, name in zip(out, ref, ["y", "dx", "dA", "dB", "dbias"]):
        assert_rel_close(got, want, dtype, name=name)


def test_small_inputs_split_the_reduction_to_fill_the_gpu(gpu, monkeypatch):
    """256 rows give a handful of row blocks; splitting K (skinny) and the rows (tn) gives every SM work."""
    _, sms = gpu
    grids = {}
    for name in ("_skinny_kernel", "_tn_kernel"):
        kernel = getattr(triton_lora, name)
        monkeypatch.setattr(triton_lora, name, _GridRecorder(kernel, grids.setdefault(name, [])))
    x, a = torch.randn(256, 3072), torch.randn(3072, 16)
    triton_lora.skinny(x, a, 1.0)
    triton_lora.tn_matmul(torch.randn(256, 16), x, 1.0, torch.float32)
    for name, (grid,) in grids.items():
        programs = grid[0] * grid[1] * grid[2]
        assert programs >= sms, f"{name}: grid {grid} has fewer programs than the {sms} SMs"


class _GridRecorder:
    """Wraps a kernel: kernel[grid](...) notes the grid, then launches as before."""

    def __init__(self, kernel, grids):
        self.kernel, self.grids = kernel, grids

    def __getitem__(self, grid):
        self.grids.append(grid)
        return self.kernel[grid]

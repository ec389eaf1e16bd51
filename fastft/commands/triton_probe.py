"""A kernel `fastft doctor` compiles to see whether Triton can target a GPU architecture (no launch)."""
import warnings

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource


@triton.jit
def _double(x_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(x_ptr + offsets, tl.load(x_ptr + offsets, mask=offsets < n) * 2, mask=offsets < n)


def compile_probe(arch: int) -> int:
    """Compile for sm_<arch> through ptxas; returns the bytes of shared memory the launch would need."""
    signature = {"x_ptr": "*fp32", "n": "i32", "BLOCK": "constexpr"}
    with warnings.catch_warnings():  # Triton 3.9's notice about a future FP-fusion default is not the user's concern
        warnings.simplefilter("ignore", UserWarning)
        kernel = triton.compile(ASTSource(_double, signature, {"BLOCK": 128}), target=GPUTarget("cuda", arch, 32))
    return kernel.metadata.shared

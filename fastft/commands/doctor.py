"""`fastft doctor`: what this machine offers fastft (device, versions, bitsandbytes 4-bit, Triton, kernel
self-check), one line each. Never fails: a check that cannot run says why on its line."""
import importlib.metadata

import torch

from ..kernels._backend import interpreting
from ..patching.self_check import Shapes, describe, run_self_check

PACKAGES = ("torch", "triton", "transformers", "peft", "trl", "bitsandbytes", "unsloth")
# The default recipe's adapter on a Llama-3.2-3B-sized decoder: what a user with a GPU most likely runs.
DOCTOR_SHAPES = dict(hidden=3072, intermediate=8192, rank=16, head_dim=128, vocab=128_256, activation="swiglu",
                     dropout=0.05)


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def device_lines() -> list[str]:
    if not torch.cuda.is_available():
        return ["device       cpu (no CUDA device): every fastft kernel runs its PyTorch path"]
    lines = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        lines.append(f"device       cuda:{index} {props.name}, compute capability {props.major}.{props.minor}, "
                     f"{props.multi_processor_count} SMs, shared memory per block {props.shared_memory_per_block_optin:,} B "
                     f"(opt-in), {props.total_memory / 2**30:.1f} GiB")
    return lines


def bitsandbytes_4bit() -> str:
    """Quantize a small weight to NF4 and multiply through bitsandbytes, against the dequantized product."""
    if version("bitsandbytes") == "not installed":
        return "not installed: QLoRA (model.quantization: nf4) is unavailable"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        import bitsandbytes as bnb

        gen = torch.Generator().manual_seed(0)
        weight = torch.randn(128, 256, generator=gen, dtype=torch.bfloat16)
        x = torch.randn(4, 256, generator=gen, dtype=torch.bfloat16).to(device)
        packed = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4").to(device)
        out = bnb.matmul_4bit(x, packed.t(), quant_state=packed.quant_state)
        dense = bnb.functional.dequantize_4bit(packed.data, packed.quant_state)
        err = ((out.float() - x.float() @ dense.float().t()).norm() / out.float().norm()).item()
    except Exception as error:  # a broken install shows here, not in the middle of a run
        return f"FAILS on {device}: {describe(error)}"
    verdict = "works" if err <= 1e-2 else "WRONG RESULT"
    return f"{verdict} on {device} (NF4 quantize + matmul, relative error {err:.1e} against the dequantized weight)"


def triton_target() -> str:
    """Compile a small kernel for this GPU's architecture (on the CPU, for sm_80: the offline toolchain works)."""
    if version("triton") == "not installed":
        return "not installed: kernels run their PyTorch paths"
    if interpreting():
        return "TRITON_INTERPRET=1 is set: Triton kernels run through its CPU interpreter, nothing is compiled"
    cc = torch.cuda.get_device_capability() if torch.cuda.is_available() else (8, 0)
    target = f"sm_{cc[0]}{cc[1]}"
    try:
        from .triton_probe import compile_probe

        shared = compile_probe(cc[0] * 10 + cc[1])
    except Exception as error:
        return f"cannot compile for {target}: {describe(error)}"
    where = "this GPU" if torch.cuda.is_available() else "no GPU here; offline compile"
    return f"compiles for {target} ({where}; probe kernel {shared} B shared memory)"


def self_check_lines() -> list[str]:
    if not torch.cuda.is_available():
        return ["self-check   skipped on CPU: PyTorch paths run"]
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    shapes = Shapes(dtype=dtype, **DOCTOR_SHAPES)
    head = (f"self-check   on cuda:0, {str(dtype).removeprefix('torch.')}, hidden {shapes.hidden}, rank {shapes.rank}, "
            f"head dim {shapes.head_dim}, vocabulary {shapes.vocab:,} (sliced), LoRA dropout {shapes.dropout:g}")
    return [head] + [f"  {result.line()}" for result in run_self_check(shapes, torch.device("cuda", 0))]


def doctor_lines() -> list[str]:
    lines = device_lines()
    lines += [f"{'version':12s} {name} {version(name)}" for name in PACKAGES]
    lines.append(f"{'bnb 4-bit':12s} {bitsandbytes_4bit()}")
    lines.append(f"{'triton':12s} {triton_target()}")
    return lines + self_check_lines()

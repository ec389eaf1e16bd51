"""Whether this CPU multiplies bf16 matrices in hardware, which decides if bf16 can pay off on it.

Without AMX or AVX512-BF16 torch emulates bf16 matmuls: on an AVX2-only AMD EPYC (torch 2.13, 2 cores) a 1024^3
bf16 matmul took 2.34 s against 0.028 s in fp32, ~80x slower. With AVX512-BF16 a 2048x640x2048 bf16 matmul ran
about 2.5x faster than fp32.
"""
import torch

# torch.cpu capability key -> the instruction set's usual name, best first
_NATIVE_BF16 = (("amx_bf16", "AMX"), ("avx512_bf16", "AVX512-BF16"))


def native_bf16() -> str | None:
    """The instruction set this CPU multiplies bf16 with ("AMX" or "AVX512-BF16"), or None when it has neither."""
    capabilities = _capabilities()
    return next((name for key, name in _NATIVE_BF16 if capabilities.get(key)), None)


def _capabilities() -> dict:
    """torch's view of the CPU's instruction sets; {} when this torch cannot say (then nothing counts as native)."""
    try:
        if hasattr(torch.cpu, "get_capabilities"):  # public in torch 2.13
            return dict(torch.cpu.get_capabilities())
        # Older torch has only private probes, which may move or vanish: hence the guard.
        return {"amx_bf16": torch.cpu._is_amx_tile_supported(), "avx512_bf16": torch.cpu._is_avx512_bf16_supported()}
    except (AttributeError, RuntimeError):
        return {}

"""liger: the hf-peft-trl setup with TRL's `use_liger_kernel=True` (Liger's Triton kernels; CUDA only)."""
from .gpu_only import missing


def unavailable(cfg) -> str | None:
    return missing("liger_kernel", "liger-kernel", "Liger's Triton kernels need a CUDA GPU")


def build(cfg, data):
    from .hf_peft_trl import lora_model, trl_run

    model = lora_model(cfg, data.source)
    return trl_run(cfg, data, model, "kernels: Liger (TRL use_liger_kernel)", use_liger_kernel=True)

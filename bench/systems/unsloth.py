"""unsloth: Unsloth's FastLanguageModel (its patched model and LoRA) trained by TRL's SFTTrainer as in hf-peft-trl.

Unsloth's backend is GPU-only (on CPU its from_pretrained fails with "Found no NVIDIA driver"). Not exercised on
the CPU machine this harness was written on: run it where a GPU and unsloth are present.
"""
from .gpu_only import missing


def unavailable(cfg) -> str | None:
    reason = missing("unsloth", "unsloth", "Unsloth's backend needs a CUDA GPU")
    if reason is None:
        import unsloth  # noqa: F401  -- must come before transformers to patch it; run_one asks before loading data
    return reason


def build(cfg, data):
    import torch
    from unsloth import FastLanguageModel

    from ..config import LORA, SEED
    from .hf_peft_trl import trl_run

    model, _ = FastLanguageModel.from_pretrained(str(data.source), max_seq_length=cfg.seq_len,
                                                 dtype=getattr(torch, cfg.compute_dtype), load_in_4bit=cfg.quant == "nf4")
    model = FastLanguageModel.get_peft_model(
        model, r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"], target_modules=LORA["targets"],
        bias="none", use_gradient_checkpointing="unsloth" if cfg.gradient_checkpointing else False, random_state=SEED,
    )
    return trl_run(cfg, data, model, "kernels: Unsloth")

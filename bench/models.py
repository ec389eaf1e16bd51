"""Model sources: the embedded Gemma 3 270M, randomly initialised configs with the real vocabularies, or a folder.

Random models are built once (fixed seed) and saved like a hub checkpoint under fastft's cache, so every system
loads the same weights through its own from_pretrained path (which QLoRA needs). They carry the Gemma 3
tokenizer; token ids are taken modulo the vocabulary (the text is meaningless to a random model anyway).
"""
import os
import shutil
import tempfile
from pathlib import Path

EMBEDDED = "gemma3-270m"
_TINY = {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 4,
         "num_key_value_heads": 2, "head_dim": 64}
_MEDIUM = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 8, "num_attention_heads": 16,
           "num_key_value_heads": 4, "head_dim": 64}
_FAMILIES = {  # model_type, real vocabulary size, family-specific settings
    "llama3": ("llama", 128_256, {"rope_theta": 500000.0}),
    "qwen3": ("qwen3", 151_936, {"rope_theta": 1000000.0}),
    "gemma3": ("gemma3_text", 262_144, {"sliding_window": 512, "query_pre_attn_scalar": 64}),
}
RANDOM = {f"{family}-{size}": (family, dims) for family in _FAMILIES
          for size, dims in (("tiny", _TINY), ("medium", _MEDIUM))}


def model_source(name: str) -> Path:
    """The checkpoint folder (with tokenizer) for a benchmark model name."""
    from fastft.models.embedded import cache_root, resolve_embedded

    if name == EMBEDDED:
        return resolve_embedded("embedded:" + EMBEDDED)
    if name in RANDOM:
        target = cache_root() / "bench" / name
        if not (target / "config.json").exists():
            _save_random(name, target, resolve_embedded("embedded:" + EMBEDDED))
        return target
    folder = Path(name)
    if not (folder / "config.json").exists():
        raise SystemExit(f"unknown model {name!r}: use {EMBEDDED}, one of {', '.join(RANDOM)}, or a checkpoint folder")
    return folder


def _save_random(name: str, target: Path, tokenizer_source: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    family, dims = RANDOM[name]
    model_type, vocab, extra = _FAMILIES[family]
    config = AutoConfig.for_model(model_type, vocab_size=vocab, tie_word_embeddings=True, max_position_embeddings=8192,
                                  **dims, **extra)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed, so an interrupted build never looks complete.
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}-"))
    try:
        model.to(torch.bfloat16).save_pretrained(work, safe_serialization=True)
        AutoTokenizer.from_pretrained(tokenizer_source).save_pretrained(work)
        os.replace(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise

"""`fastft merge`: fold a LoRA adapter into its base model and save a checkpoint plain transformers can load.

A QLoRA adapter was trained against the 4-bit base, not the original weights. When the run's recipe (saved
beside the adapter as resolved_recipe.yaml) says nf4, the base is quantized with the same settings and then
dequantized, so the adapter lands on the weights it learned to correct.
"""
from pathlib import Path

from ..config.schema import DTYPE_NAMES
from ..errors import FastftError
from ..models.adapters import base_name, load_with_adapter, read_adapter_config, run_settings
from ..models.loader import load_tokenizer, resolve_source
from ..runtime.writable import check_writable_folder

# Each dtype by its name and its short name.
_ACCEPTED = {**{name: name for name in DTYPE_NAMES}, **{short: name for name, short in DTYPE_NAMES.items()}}


def merge_adapter(adapter_dir, out_dir, dtype: str = "bfloat16", base: str | None = None) -> Path:
    """Merge the adapter in `adapter_dir` into its base and save base + tokenizer to `out_dir` as safetensors."""
    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    check_writable_folder(out_dir, "--out")
    adapter_config = read_adapter_config(adapter_dir)
    if dtype not in _ACCEPTED:
        raise FastftError(f"unknown dtype {dtype!r}", hint=f"use one of: {', '.join(_ACCEPTED)}")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FastftError("the output folder is not empty", where=str(out_dir), hint="name a new or empty folder")

    model_cfg, qlora_cfg = run_settings(adapter_dir, base_name(adapter_config, base, adapter_dir), _ACCEPTED[dtype])
    source = resolve_source(model_cfg.name)
    has_tokenizer = (adapter_dir / "tokenizer_config.json").is_file()
    tokenizer, _ = load_tokenizer(str(adapter_dir) if has_tokenizer else source, model_cfg.trust_remote_code)
    merged = load_with_adapter(model_cfg, qlora_cfg, source, tokenizer, adapter_dir, dense=True)
    merged.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir

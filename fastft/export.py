"""`fastft merge`: fold a LoRA adapter into its base model and save a checkpoint plain transformers can load.

A QLoRA adapter was trained against the 4-bit base, not the original weights. When the run's recipe (saved
beside the adapter as resolved_recipe.yaml) says nf4, the base is quantized with the same settings and then
dequantized, so the adapter lands on the weights it learned to correct.
"""
import json
from pathlib import Path

import yaml
from pydantic import ValidationError

from .config.schema import ModelSection, QloraSection
from .errors import FastftError
from .models.loader import load_base_model, load_tokenizer, resolve_source
from .training.outputs import RECIPE_FILE

DTYPE_NAMES = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16",
               "float32": "float32", "fp32": "float32"}


def read_adapter_config(adapter_dir: Path) -> dict:
    if not adapter_dir.is_dir():
        raise FastftError("the adapter folder does not exist", where=str(adapter_dir),
                          hint="pass the final_model folder of a fastft run (outputs/<experiment>/final_model)")
    config_file = adapter_dir / "adapter_config.json"
    if not config_file.is_file():
        raise FastftError("no adapter_config.json: this is not a LoRA adapter folder", where=str(adapter_dir),
                          hint="pass the folder a fastft run saved its adapter in (outputs/<experiment>/final_model)")
    if not (adapter_dir / "adapter_model.safetensors").is_file() and (adapter_dir / "adapter_model.bin").is_file():
        raise FastftError("the adapter has only PyTorch pickle weights (adapter_model.bin); fastft loads safetensors only, "
                          "because unpickling a file can run arbitrary code", where=str(adapter_dir),
                          hint="where you trust the file, load it with peft and save_pretrained it again (safetensors is the default)")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FastftError(f"adapter_config.json is not valid UTF-8 JSON ({exc})", where=str(adapter_dir),
                          hint="pass the folder a fastft run saved its adapter in") from None
    if not isinstance(config, dict):
        raise FastftError("adapter_config.json does not hold a JSON object", where=str(adapter_dir),
                          hint="pass the folder a fastft run saved its adapter in")
    return config


def run_settings(adapter_dir: Path, base: str, dtype: str) -> tuple[ModelSection, QloraSection]:
    """The model and QLoRA sections the adapter was trained with, when its run recipe is there; else plain LoRA."""
    recipe_file = adapter_dir.parent / RECIPE_FILE
    recipe = yaml.safe_load(recipe_file.read_text(encoding="utf-8")) if recipe_file.is_file() else {}
    # eager attention loads for every architecture on every machine; merging never runs attention that matters.
    model = {**recipe.get("model", {}), "name": base, "dtype": dtype, "attn_implementation": "eager"}
    try:
        return ModelSection(**model), QloraSection(**recipe.get("qlora", {}))
    except ValidationError as exc:
        raise FastftError(f"cannot read the run's model settings: {exc.errors()[0]['msg']}", where=str(recipe_file),
                          hint="its model and qlora sections must follow the current recipe schema") from None


def _base_name(adapter_config: dict, base: str | None, adapter_dir: Path) -> str:
    name = base or adapter_config.get("base_model_name_or_path")
    if not name:
        raise FastftError("adapter_config.json names no base model", where=str(adapter_dir),
                          hint="name the base model explicitly (base=... / --base)")
    return name


def load_dense_base(model_cfg: ModelSection, qlora_cfg: QloraSection, source: str):
    model, dtype = load_base_model(model_cfg, qlora_cfg, source)
    if model_cfg.quantization == "nf4":
        model = model.dequantize()  # dense nn.Linear holding exactly the 4-bit weights, no quantization_config
    return model.to(dtype)


def merge_adapter(adapter_dir, out_dir, dtype: str = "bfloat16", base: str | None = None) -> Path:
    """Merge the adapter in `adapter_dir` into its base and save base + tokenizer to `out_dir` as safetensors."""
    from peft import PeftModel

    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    adapter_config = read_adapter_config(adapter_dir)
    if dtype not in DTYPE_NAMES:
        raise FastftError(f"unknown dtype {dtype!r}", hint=f"use one of: {', '.join(DTYPE_NAMES)}")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FastftError("the output folder is not empty", where=str(out_dir), hint="name a new or empty folder")

    model_cfg, qlora_cfg = run_settings(adapter_dir, _base_name(adapter_config, base, adapter_dir), DTYPE_NAMES[dtype])
    source = resolve_source(model_cfg.name)
    has_tokenizer = (adapter_dir / "tokenizer_config.json").is_file()
    tokenizer = load_tokenizer(str(adapter_dir) if has_tokenizer else source, model_cfg.trust_remote_code)
    model = load_dense_base(model_cfg, qlora_cfg, source)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        # Training added chat tokens and resized. peft then saves the resized input and output embeddings
        # with the adapter (when it can read the base config), and they overwrite these placeholder rows.
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload(safe_merge=True)
    merged.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir

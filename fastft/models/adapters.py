"""Adapter folders: read and check one, and rebuild the base model a run's adapter was trained on."""
import json
from pathlib import Path

import yaml
from pydantic import ValidationError

from ..config.schema import ModelSection, QloraSection
from ..errors import FastftError
from ..runtime.outputs import RECIPE_FILE
from .loader import load_base_model


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


def base_name(adapter_config: dict, base: str | None, adapter_dir: Path) -> str:
    name = base or adapter_config.get("base_model_name_or_path")
    if not name:
        raise FastftError("adapter_config.json names no base model", where=str(adapter_dir),
                          hint="name the base model explicitly (base=... / --base)")
    return name


def load_with_adapter(model_cfg: ModelSection, qlora_cfg: QloraSection, source: str, tokenizer, adapter: Path | None,
                      dense: bool = False):
    """The base model, its embeddings grown to `tokenizer`, with `adapter` merged in (the base alone when None).
    `dense` (merge): a 4-bit base is dequantized first, so the adapter lands on the weights it learned to correct.
    Otherwise a 4-bit base keeps the adapter unmerged: folding LoRA into NF4 weights would requantize them; a
    plain one is merged, since unmerged every decoding step pays the LoRA matmuls and, for trained token rows, a
    copy of the whole embedding matrix (2x the generation time for Gemma 3 270M's 262k rows)."""
    from peft import PeftModel

    model, dtype = load_base_model(model_cfg, qlora_cfg, source)
    quantized = model_cfg.quantization == "nf4"
    if dense:  # dequantize: dense nn.Linear holding exactly the 4-bit weights, no quantization_config
        model = (model.dequantize() if quantized else model).to(dtype)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        # Training added chat tokens and resized as here; peft saved the resized embeddings with the adapter, and
        # they overwrite these rows. A merge takes every such row from there, so it skips computing their mean.
        model.resize_token_embeddings(len(tokenizer), mean_resizing=not dense)
    if adapter is None:
        return model
    model = PeftModel.from_pretrained(model, str(adapter))
    return model if quantized and not dense else model.merge_and_unload(safe_merge=True)

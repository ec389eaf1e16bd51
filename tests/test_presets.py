"""`auto` in a recipe becomes the model family's preset and this machine's choice, before anything is written."""
import pytest
import torch
from transformers import AutoConfig, Gemma3TextConfig, LlamaConfig, Qwen3Config

from fastft.config.loader import load_recipe
from fastft.models import presets
from fastft.models.families import FAMILIES, family_for
from fastft.models.presets import apply_presets
from tests.factories import REPO, recipe_for

SEVEN = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CONFIGS = {"llama": LlamaConfig, "qwen3": Qwen3Config, "gemma3_text": Gemma3TextConfig}


def saved_config(tmp_path, family):
    folder = tmp_path / family
    CONFIGS[family](num_hidden_layers=1, hidden_size=32, intermediate_size=64, num_attention_heads=2).save_pretrained(folder)
    return str(folder)


def family_of(source: str):
    return family_for(AutoConfig.from_pretrained(source))[0]


def fake_gpu(monkeypatch, bf16=True):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)


@pytest.mark.parametrize("family, gpu_dtype", [("llama", "bfloat16"), ("qwen3", "float16"), ("gemma3_text", "bfloat16")])
def test_auto_resolves_to_the_family_preset(tmp_path, monkeypatch, family, gpu_dtype):
    source = saved_config(tmp_path, family)
    recipe = load_recipe(recipe_for(tmp_path, source))
    assert (recipe.lora.target_modules, recipe.qlora.compute_dtype, recipe.model.attn_implementation) == ("auto",) * 3
    on_cpu = apply_presets(recipe, family_of(source))
    assert on_cpu.lora.target_modules == SEVEN
    assert on_cpu.qlora.compute_dtype == "float32" and on_cpu.model.attn_implementation == "sdpa"
    fake_gpu(monkeypatch)
    assert apply_presets(recipe, family_of(source)).qlora.compute_dtype == gpu_dtype


def test_bf16_preset_falls_back_to_fp16_on_a_gpu_without_bf16(monkeypatch):
    fake_gpu(monkeypatch, bf16=False)
    assert presets.qlora_compute(FAMILIES["llama"].preset) == "float16"


def test_explicit_values_are_kept(tmp_path, monkeypatch):
    source = saved_config(tmp_path, "qwen3")
    recipe = load_recipe(REPO / "recipes" / "llama_bllossom_summary.yaml", ["model.attn_implementation=eager", "lora.target_modules=[q_proj]"])
    fake_gpu(monkeypatch)
    resolved = apply_presets(recipe, family_of(source))
    assert (resolved.qlora.compute_dtype, resolved.model.attn_implementation, resolved.lora.target_modules) == ("bfloat16", "eager", ["q_proj"])


def test_flash_attention_only_with_a_gpu_and_flash_attn(monkeypatch):
    assert presets.attention() == "sdpa"
    fake_gpu(monkeypatch)
    monkeypatch.setattr(presets.importlib.util, "find_spec", lambda name: object() if name == "flash_attn" else None)
    assert presets.attention() == "flash_attention_2"

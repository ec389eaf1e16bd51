"""Gemma 3 270M's shape with few layers and the benchmark's LoRA settings, for the memory tools that need no weights:
the config comes from the embedded model's checkpoint (converted once into fastft's cache), the weights are random."""
import torch

PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def gemma3_config(layers: int):
    """Gemma 3 270M's text config cut to `layers` decoder layers (their attention types kept from the start)."""
    from transformers import AutoConfig

    from bench.models import EMBEDDED, model_source

    config = AutoConfig.from_pretrained(model_source(EMBEDDED))
    config.layer_types = config.layer_types[:layers]
    config.num_hidden_layers = layers
    config.dtype = torch.float32
    config._attn_implementation = "sdpa"  # what fastft's recipes and the benchmark's systems load
    return config


def lora_config(dropout: float = 0.0, **extra):
    """LoRA r=16, alpha 32 on the seven projections, as every benchmark system gets it."""
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, lora_dropout=dropout, target_modules=PROJECTIONS, task_type="CAUSAL_LM",
                      **extra)

"""Tiny randomly initialised models of every patched family, with LoRA or QLoRA, and a prompt-masked batch.

Shared by the test_patch_* files. Real layer structure (2 decoder layers, GQA, q/k norms, sliding windows,
softcapping) at small, odd-ish sizes: hidden 40, head_dim 10, intermediate 72, vocab 157. Weights are drawn
wider than transformers' default (std 0.02) and norm weights and biases are random, so attention is far from
uniform and a wrong rotation, norm offset, activation, bias or LoRA scaling moves the loss or the gradients well
past the tolerances (checked by breaking each on purpose).
"""
import pytest
import torch

FAMILIES = ["llama", "qwen2", "qwen3", "gemma", "gemma2", "gemma3"]
SEVEN = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
VOCAB = 157
_COMMON = dict(vocab_size=VOCAB, hidden_size=40, intermediate_size=72, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, head_dim=10, max_position_embeddings=64, initializer_range=0.3)
_GEMMA2_3 = dict(query_pre_attn_scalar=10, sliding_window=5, final_logit_softcapping=30.0,
                 layer_types=["sliding_attention", "full_attention"])


def tiny_config(family: str):
    import transformers as tf

    if family == "gemma2":  # transformers runs attention-logit softcapping only in eager attention
        return tf.Gemma2Config(**_COMMON, **_GEMMA2_3, attn_logit_softcapping=50.0, attn_implementation="eager")
    if family == "gemma3":
        return tf.Gemma3TextConfig(**_COMMON, **_GEMMA2_3)
    config_cls = {"llama": tf.LlamaConfig, "qwen2": tf.Qwen2Config, "qwen3": tf.Qwen3Config, "gemma": tf.GemmaConfig}
    return config_cls[family](**_COMMON)


def tiny_base(family: str, seed: int = 0):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family))
    with torch.no_grad():
        for module in model.modules():
            if type(module).__name__.endswith("RMSNorm"):
                module.weight.normal_(0.0, 0.5)
            elif isinstance(module, torch.nn.Linear) and module.bias is not None:  # Qwen2's q/k/v start at zero
                module.bias.normal_(0.0, 0.5)
    return model


def quantized_base(family: str, folder, device: str = "cpu"):
    """The same weights as tiny_base, loaded through bitsandbytes NF4 (fp32 compute) as a QLoRA recipe does."""
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if not (folder / "config.json").exists():
        tiny_base(family).save_pretrained(folder)
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.float32)
    placed = {} if torch.device(device).type == "cpu" else {"device_map": {"": str(device)}}  # loaded there, as 4 bits
    model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=quant, dtype=torch.float32, **placed)
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def with_lora(base, dropout: float = 0.0, seed: int = 1, **lora_kwargs):
    """PEFT LoRA on the seven projections; init_lora_weights=False so B != 0 and LoRA changes the output."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=SEVEN, task_type="CAUSAL_LM",
                        init_lora_weights=False, **lora_kwargs)
    return get_peft_model(base, config).train()


def tiny_peft(family: str, quant_folder=None, device: str = "cpu", **lora_kwargs):
    base = tiny_base(family).to(device) if quant_folder is None else quantized_base(family, quant_folder, device)
    return with_lora(base, **lora_kwargs)


def prompt_masked_batch(seed: int = 5, batch: int = 3, length: int = 13, prompt: int = 8):
    """Right-padded batch: labels -100 on the prompt and on padding (row 2 is 3 tokens shorter)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    mask[-1, length - 3:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :prompt] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def on(device, batch: dict) -> dict:
    return {name: t.to(device) for name, t in batch.items()}


def lora_grads(model) -> dict:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_models_have_the_family_structure(family):
    """The parity tests only mean something if these models contain what the patches replace."""
    model = tiny_peft(family)
    names = {type(m).__name__ for m in model.modules()}
    prefix = {"llama": "Llama", "qwen2": "Qwen2", "qwen3": "Qwen3", "gemma": "Gemma", "gemma2": "Gemma2",
              "gemma3": "Gemma3"}[family]
    assert {f"{prefix}RMSNorm", f"{prefix}Attention", f"{prefix}MLP", "Linear"} <= names
    attn = model.get_base_model().model.layers[0].self_attn
    assert hasattr(attn, "q_norm") == (family in ("qwen3", "gemma3"))
    assert (attn.q_proj.base_layer.bias is not None) == (family == "qwen2")
    lm_config = model.config.get_text_config()
    assert (getattr(lm_config, "final_logit_softcapping", None) is not None) == (family in ("gemma2", "gemma3"))

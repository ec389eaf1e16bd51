"""What a run will need before any weight is loaded: peak memory of training (weights, LoRA parameters, their
gradients and optimizer state, activations, the loss's working set) and the size of one checkpoint and of
final_model. Shapes come from the model's config alone: the model is built on the meta device, which allocates
nothing, so every count below is exact and only the activation and loss terms are modelled."""
from dataclasses import dataclass

import torch
from torch import nn

from ..kernels.cross_entropy import CHUNK_ELEMENTS
from ..kernels.linear_cross_entropy import GPU_CHUNK_BYTES
from .loader import resolve_dtype

NF4_BYTES = 0.5 + 1 / 64 * (1 + 4 / 256)  # 4-bit codes, an 8-bit absmax per 64 weights, fp32 per 256 absmax
_MLP_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")
LORA_STATE_BYTES = 4 + 4  # fp32 parameter and gradient; the optimizer adds its own per-parameter bytes


@dataclass
class Footprint:
    weights: int
    trained: int  # LoRA parameters and their gradients and optimizer state
    activations: int
    loss: int
    checkpoint: int  # one checkpoint folder: adapter weights, optimizer state
    final_model: int  # adapter weights (and resized embeddings), without the tokenizer files

    @property
    def training(self) -> int:
        return self.weights + self.trained + self.activations + self.loss


def meta_model(config, trust_remote_code: bool):
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)


def _targeted(name: str, targets) -> bool:
    if targets == "all-linear":
        return not name.endswith("lm_head")
    return name.rsplit(".", 1)[-1] in targets


def optimizer_bytes(optimizer: str) -> int:
    """Optimizer state per trained parameter."""
    if "sgd" in optimizer:
        return 0
    return 2 if "8bit" in optimizer else 8  # Adam's two moments


def estimate(model, recipe, optimizer: str, longest: int, trained_rows: int, on_gpu: bool, new_rows: int = 0) -> Footprint:
    """`model` from meta_model; `longest`: the longest training sequence in tokens; `trained_rows`: the most labelled
    positions one micro-batch can hold; `new_rows`: embedding rows added for chat tokens (saved whole)."""
    dtype = resolve_dtype(recipe.model.dtype)
    nf4 = recipe.model.quantization == "nf4"
    text = model.config.get_text_config()
    hidden, vocab = text.hidden_size, text.vocab_size
    weights = lora = 0
    linears = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    quantized = {id(module.weight) for name, module in linears if nf4 and not name.endswith("lm_head")}
    for name, module in linears:
        if _targeted(name, recipe.lora.target_modules):
            lora += recipe.lora.r * (module.in_features + module.out_features)
    for parameter in model.parameters():
        if id(parameter) in quantized:
            weights += parameter.numel() * NF4_BYTES
        else:  # QLoRA keeps what it does not quantize in fp32 (prepare_model_for_kbit_training)
            weights += parameter.numel() * (4 if nf4 else dtype.itemsize)
    trained_params = lora + len(recipe.lora.train_tokens) * hidden
    trained = trained_params * (LORA_STATE_BYTES + optimizer_bytes(optimizer))
    act_bytes = 4 if not on_gpu else 2
    tokens = recipe.training.batch_size * longest
    mode = recipe.training.gradient_checkpointing
    per_layer = _layer_activations(text, recipe.lora.target_modules, recipe.model.attn_implementation, longest,
                                   selective=mode == "selective")
    layers = text.num_hidden_layers
    if mode is True:  # each layer's input kept, one layer's whole set at a time
        activations = tokens * act_bytes * (layers * hidden + per_layer)
    else:
        activations = tokens * act_bytes * layers * per_layer
    if recipe.kernels.loss:
        chunk = GPU_CHUNK_BYTES if on_gpu else CHUNK_ELEMENTS * 4
        loss = 2 * min(recipe.training.batch_size * trained_rows * vocab * 4, chunk)  # logits and their gradient
    else:
        loss = 3 * tokens * vocab * 4  # full logits, their fp32 copy and gradient
    adapter = (lora + (len(recipe.lora.train_tokens) + new_rows) * hidden) * 4
    return Footprint(int(weights), int(trained), int(activations), int(loss),
                     checkpoint=int(adapter + trained_params * optimizer_bytes(optimizer)),
                     final_model=int(adapter + (vocab * hidden * dtype.itemsize if new_rows else 0)))


def _layer_activations(text, targets, attention: str, longest: int, selective: bool = False) -> int:
    """Values kept for the backward pass per token in one decoder layer: the two norms' inputs and outputs, q/k/v
    and their rotated copies, the attention output, the MLP's gate, up, activation and product, and for each LoRA'd
    projection its dropped-out input and low-rank output. selective (checkpointing) with LoRA on all three MLP
    projections: the MLP block keeps only its input, as lora_mlp does when it recomputes gate and up."""
    hidden, inner = text.hidden_size, text.intermediate_size
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or hidden // heads
    kv = getattr(text, "num_key_value_heads", None) or heads
    q, k = heads * head_dim, kv * head_dim
    inputs = {"q_proj": hidden, "k_proj": hidden, "v_proj": hidden, "o_proj": q, "gate_proj": hidden, "up_proj": hidden,
              "down_proj": inner}
    names = list(inputs) if targets == "all-linear" else targets
    recomputed = selective and set(_MLP_PROJECTIONS) <= set(names)
    values = 4 * hidden + 2 * (q + 2 * k) + q + (hidden if recomputed else 4 * inner)
    values += sum(inputs.get(name, hidden) for name in names if not (recomputed and name in _MLP_PROJECTIONS))
    if attention == "eager":  # the softmax matrix per head
        values += heads * longest
    return values

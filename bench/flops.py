"""FLOPs of one LoRA training step, counted from the model config (matmuls only; elementwise work is ignored).

Convention, for frozen base weights with LoRA adapters:
- base linears: forward 2*in*out per token, backward 2*in*out for the input gradient (no weight gradient);
- LoRA adapters: 6*r*(in+out) per token (forward, input gradient, adapter weight gradients);
- attention: causal (and sliding-window where the config says so) score and value products, backward 2x forward;
- LM head: forward plus input gradient, 4*V*H per row it is applied to (tied/frozen: no weight gradient).
The head counts only on labelled positions: the work the loss needs, whatever a system computes beyond it (a
plain causal LM applies the head to every position; counting that would credit wasted work as utilisation and
put a prompt-masked system above 100%).
"""


def _dims(config):
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return text, heads, head_dim


def _projections(text, heads: int, head_dim: int) -> dict[str, tuple[int, int]]:
    """(in, out) of the seven projections of one decoder layer."""
    h, kv, inter = text.hidden_size, text.num_key_value_heads * head_dim, text.intermediate_size
    return {"q_proj": (h, heads * head_dim), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (heads * head_dim, h),
            "gate_proj": (h, inter), "up_proj": (h, inter), "down_proj": (inter, h)}


def _causal_pairs(seq_len: int, window: int | None) -> int:
    """Query-key pairs a causal (optionally sliding-window) attention scores in one sequence."""
    if not window or window >= seq_len:
        return seq_len * (seq_len + 1) // 2
    return window * (window + 1) // 2 + (seq_len - window) * window


def _attention_pairs(text, seq_len: int) -> int:
    """Scored pairs summed over layers."""
    types = getattr(text, "layer_types", None) or ["full_attention"] * text.num_hidden_layers
    window = getattr(text, "sliding_window", None)
    return sum(_causal_pairs(seq_len, window if kind == "sliding_attention" else None) for kind in types)


def useful_step_flops(config, batch: int, seq_len: int, trained_rows: int, lora_r: int, lora_targets) -> float:
    """FLOPs one forward+backward over batch x seq_len tokens needs for its loss on trained_rows positions."""
    text, heads, head_dim = _dims(config)
    projections = _projections(text, heads, head_dim)
    tokens = batch * seq_len
    base = 4 * sum(i * o for i, o in projections.values())
    lora = 6 * lora_r * sum(i + o for name, (i, o) in projections.items() if name in lora_targets)
    body = (base + lora) * text.num_hidden_layers * tokens
    attention = 12 * heads * head_dim * _attention_pairs(text, seq_len) * batch
    head = 4 * text.vocab_size * text.hidden_size
    return float(body + attention + head * trained_rows)

"""A merged Hugging Face causal LM and its tokenizer, written as one GGUF file for llama.cpp, Ollama and LM Studio.

The layout follows llama.cpp's converter (convert_hf_to_gguf.py) for Gemma 3, Llama and Qwen2/Qwen3: its tensor
names (gguf.TensorNameMap), its architecture keys, its weight conventions (Gemma's norms stored as 1 + w, Llama's
Q/K rows interleaved for its rotary layout, a tied head left out) and its tokenizer keys. transformers' GGUF loader
reads the same file back. This module imports only torch, numpy, gguf, transformers and the standard library, so it
does not depend on where it sits in fastft.
"""
import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import torch

QUANTS = ("f16", "bf16", "q8_0")
# transformers model_type -> llama.cpp architecture
ARCHITECTURES = {"gemma3_text": "gemma3", "llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}
FAMILIES = "Gemma 3 (Gemma3ForCausalLM), Llama, Qwen2 and Qwen3"

# A byte-level BPE tokenizer's pre-tokenizer decides how llama.cpp splits text before merging, and llama.cpp knows
# it by name. Each name here is recognised by the pieces its pre-tokenizer cuts _PROBE into (sha256 of their JSON):
# digits in runs of three (Llama-3) or one (Qwen2), contractions in any case (both) or lower case only (GPT-2).
_PROBE = "Hello world! I'VE got 1234567 items, 3.14 pts\n\n  spaces\ttabs 안녕하세요, 요약해 주세요. 🦙🚀 ---=== \"quoted\" it's"
_PRE_TOKENIZERS = {
    "4ba21bc62350d93c": "llama-bpe",  # Llama-3 / 3.1 / 3.2
    "1c2925dc65e5cae1": "qwen2",  # Qwen2, Qwen2.5, Qwen3
    "c580f1cae686916a": "gpt-2",  # the byte-level default (GPT-2's split)
}


class GGUFExportError(ValueError):
    """A model or tokenizer that cannot be written as a GGUF llama.cpp would run correctly: what, and how to fix it."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  fix: {self.hint}" if self.hint else self.message


def write_gguf(model, tokenizer, path, quant: str = "f16", chat_template: str | None = None) -> Path:
    """Write `model` (a merged, unquantized transformers causal LM) and `tokenizer` to the GGUF file `path`.

    quant: "f16" or "bf16" (2-D weights in that type), or "q8_0" (8-bit blocks of 32; rows of another length stay
    f16). Norms, biases and 1-D tensors stay f32, as llama.cpp's converter keeps them.
    chat_template: written as tokenizer.chat_template; defaults to the tokenizer's own.
    Raises GGUFExportError before writing anything when the model or tokenizer cannot be represented.
    """
    try:
        import gguf
    except ImportError as exc:
        raise GGUFExportError("GGUF export needs the package gguf", hint='pip install "gguf>=0.10"') from exc
    if quant not in QUANTS:
        raise GGUFExportError(f"unknown GGUF quantization {quant!r}", hint=f"use one of: {', '.join(QUANTS)}")
    config = model.config
    arch = _architecture(config)
    n_rows = model.get_input_embeddings().weight.shape[0]
    hparams = _hparams(config, arch, n_rows)
    vocab = _tokenizer_metadata(tokenizer, n_rows, chat_template)
    tensors = _tensors(model, config, arch)

    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    writer = gguf.GGUFWriter(partial, arch)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(Path(str(getattr(model, "name_or_path", "") or arch)).name)
    writer.add_file_type(_FILE_TYPES[quant])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for key, value in hparams + vocab:
        _add(writer, key, value)
    for name, data in tensors:
        encoded, qtype = _encode(name, data, quant)
        writer.add_tensor(name, encoded, raw_dtype=qtype)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def _architecture(config) -> str:
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHITECTURES:
        raise GGUFExportError(
            f"GGUF export supports {FAMILIES} causal LMs, not model_type {model_type!r}",
            hint="export the merged safetensors checkpoint instead, or convert it with llama.cpp's convert_hf_to_gguf.py",
        )
    return ARCHITECTURES[model_type]


# ----------------------------------------------------------------------------------------------- architecture

def _hparams(config, arch: str, n_rows: int) -> list[tuple[str, object]]:
    """(key, value) pairs of the architecture metadata; `{arch}` in a key is the architecture's prefix."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    full = _rope_parameters(config, "full_attention")
    pairs = [
        ("{arch}.context_length", config.max_position_embeddings),
        ("{arch}.embedding_length", config.hidden_size),
        ("{arch}.block_count", config.num_hidden_layers),
        ("{arch}.feed_forward_length", config.intermediate_size),
        ("{arch}.attention.head_count", config.num_attention_heads),
        ("{arch}.attention.head_count_kv", config.num_key_value_heads),
        ("{arch}.attention.key_length", head_dim),
        ("{arch}.attention.value_length", head_dim),
        ("{arch}.attention.layer_norm_rms_epsilon", float(config.rms_norm_eps)),
        ("{arch}.rope.freq_base", float(full["rope_theta"])),
    ]
    pairs += _rope_scaling(full, arch)
    if arch == "llama":
        pairs += [("{arch}.vocab_size", n_rows), ("{arch}.rope.dimension_count", head_dim)]
    if arch == "gemma3":
        pairs += _gemma3_hparams(config, head_dim)
    return [(key.format(arch=arch), value) for key, value in pairs]


def _rope_parameters(config, layer_type: str) -> dict:
    """This layer type's rope settings: transformers 5 keeps them in `rope_parameters` (per layer type for Gemma 3),
    transformers 4 in flat attributes."""
    params = getattr(config, "rope_parameters", None)
    if params:
        params = dict(params.get(layer_type, params))
    elif layer_type == "sliding_attention":
        params = {"rope_theta": config.rope_local_base_freq}
    else:
        params = {"rope_theta": config.rope_theta, **(getattr(config, "rope_scaling", None) or {})}
    params["rope_type"] = params.get("rope_type", params.get("type", "default"))
    return params


def _rope_scaling(params: dict, arch: str) -> list[tuple[str, object]]:
    import gguf

    kind = params["rope_type"]
    if kind == "default" or (kind == "llama3" and arch == "llama"):  # llama3's factors go in the rope_freqs tensor
        return []
    if kind == "linear":
        return [("{arch}.rope.scaling.type", gguf.RopeScalingType.LINEAR.value), ("{arch}.rope.scaling.factor", float(params["factor"]))]
    raise GGUFExportError(
        f"RoPE scaling {kind!r} is not written to GGUF by fastft",
        hint="export models with default or linear RoPE (or llama3 RoPE on Llama), or convert with llama.cpp's convert_hf_to_gguf.py",
    )


def _gemma3_hparams(config, head_dim: int) -> list[tuple[str, object]]:
    # llama.cpp scales Gemma 3's queries by 1/sqrt(head_dim) (by 1/sqrt(hidden/heads) for the 62-layer 27B) and has no
    # key for another scalar: a model that differs would run with the wrong attention scores.
    expected = config.hidden_size // config.num_attention_heads if config.num_hidden_layers == 62 else head_dim
    if config.query_pre_attn_scalar != expected:
        raise GGUFExportError(
            f"Gemma 3 with query_pre_attn_scalar={config.query_pre_attn_scalar} cannot be run by llama.cpp, "
            f"which scales attention by 1/sqrt({expected})",
            hint="export the merged safetensors checkpoint instead",
        )
    if getattr(config, "attn_logit_softcapping", None) is not None:
        raise GGUFExportError("Gemma 3 with attn_logit_softcapping has no GGUF key", hint="export the merged safetensors checkpoint instead")
    pairs = [
        ("{arch}.rope.freq_base_swa", float(_rope_parameters(config, "sliding_attention")["rope_theta"])),
        ("{arch}.attention.sliding_window", config.sliding_window),
        # one flag per layer, so a layout other than Gemma 3's five-local-one-global is kept too
        ("{arch}.attention.sliding_window_pattern", [kind == "sliding_attention" for kind in config.layer_types]),
    ]
    if config.final_logit_softcapping:
        pairs.append(("{arch}.final_logit_softcapping", float(config.final_logit_softcapping)))
    return pairs


def _llama3_rope_factors(config) -> np.ndarray:
    """Per-frequency divisors of Llama 3.1+'s RoPE (llama.cpp reads them from the rope_freqs tensor): 1 for short
    wavelengths, `factor` for long ones, and a smooth blend between."""
    params = _rope_parameters(config, "full_attention")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    inv_freq = 1.0 / (params["rope_theta"] ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    factor, low, high = params["factor"], params["low_freq_factor"], params["high_freq_factor"]
    original = params["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    smooth = np.clip((original / wavelen - low) / (high - low), 0.0, 1.0)
    return (1.0 / ((1.0 - smooth) / factor + smooth)).astype(np.float32)


# ---------------------------------------------------------------------------------------------------- tensors

def _tensors(model, config, arch: str):
    """(GGUF name, float32 array) for every weight, in llama.cpp's conventions. Checks every name before yielding
    the first, so an unexportable model fails before the file is opened."""
    import gguf

    arch_enum = next(key for key, value in gguf.MODEL_ARCH_NAMES.items() if value == arch)
    names = gguf.get_tensor_name_map(arch_enum, config.num_hidden_layers)
    state = model.state_dict()
    head = model.get_output_embeddings()
    tied = head is not None and head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    plan = []
    for hf_name, tensor in state.items():
        if tied and tensor.data_ptr() == head.weight.data_ptr() and hf_name != _input_embedding_name(model, state):
            continue  # llama.cpp uses token_embd as the head when no output tensor is stored
        base, _, suffix = hf_name.rpartition(".")
        gguf_base = names.get_name(base)
        if gguf_base is None or not tensor.is_floating_point():
            raise GGUFExportError(
                f"tensor {hf_name!r} ({tensor.dtype}) has no place in a {arch} GGUF",
                hint="export a merged, unquantized model: merge the adapter first (fastft merge) and load it in bf16/fp32",
            )
        plan.append((hf_name, f"{gguf_base}.{suffix}"))
    return _converted(state, plan, config, arch)


def _input_embedding_name(model, state) -> str:
    pointer = model.get_input_embeddings().weight.data_ptr()
    return next(name for name, tensor in state.items() if tensor.data_ptr() == pointer)


def _converted(state, plan, config, arch):
    for hf_name, name in plan:
        data = state[hf_name].detach().to(device="cpu", dtype=torch.float32)
        if arch == "gemma3" and hf_name.endswith("norm.weight"):
            data = data + 1.0  # Gemma's RMSNorm multiplies by (1 + w); llama.cpp's by the stored weight
        if arch == "llama" and hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            data = _interleave_rotary(data, config.num_attention_heads)
        if arch == "llama" and hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            data = _interleave_rotary(data, config.num_key_value_heads)
        yield name, data.numpy()
    if arch == "llama" and _rope_parameters(config, "full_attention")["rope_type"] == "llama3":
        yield "rope_freqs.weight", _llama3_rope_factors(config)


def _interleave_rotary(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """HF Llama rotates each head's first half against its second half; llama.cpp's Llama rotates adjacent pairs.
    Reorder each head's output rows from [x0..x(d/2-1), x(d/2)..] to [x0, x(d/2), x1, x(d/2+1), ...]."""
    shape = weight.shape
    return weight.reshape(n_heads, 2, shape[0] // n_heads // 2, *shape[1:]).transpose(1, 2).reshape(shape)


_FILE_TYPES = {"f16": 1, "bf16": 32, "q8_0": 7}  # gguf.LlamaFileType MOSTLY_F16 / MOSTLY_BF16 / MOSTLY_Q8_0


def _encode(name: str, data: np.ndarray, quant: str):
    from gguf import GGMLQuantizationType as Q
    from gguf.quants import quantize

    if data.ndim == 1 or name.endswith("_norm.weight") or not name.endswith(".weight"):
        qtype = Q.F32
    else:
        qtype = {"f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0}[quant]
    if qtype == Q.Q8_0 and data.shape[-1] % 32:
        qtype = Q.F16  # Q8_0 packs rows in blocks of 32
    return quantize(data, qtype), qtype


# -------------------------------------------------------------------------------------------------- tokenizer

def _tokenizer_metadata(tokenizer, n_rows: int, chat_template: str | None) -> list[tuple[str, object]]:
    from gguf import TokenType

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    merges = [merge.split(" ", 1) if isinstance(merge, str) else merge for merge in spec["model"].get("merges", [])]
    kind = _ggml_model(tokenizer, spec)
    tokens, types = _vocabulary(tokenizer, n_rows, byte_tokens=kind == "llama")

    pairs = [("tokenizer.ggml.model", kind)]
    if kind == "gpt2":
        pairs += [("tokenizer.ggml.pre", _pre_tokenizer(tokenizer)), ("tokenizer.ggml.tokens", tokens),
                  ("tokenizer.ggml.token_type", types), ("tokenizer.ggml.merges", [" ".join(m) for m in merges])]
    else:
        scores = _merge_scores(tokens, merges)
        # llama.cpp's sentencepiece tokenizer matches user-defined tokens in the raw text, where spaces are spaces
        tokens = [text.replace("\u2581", " ") if token_type == TokenType.USER_DEFINED else text
                  for text, token_type in zip(tokens, types)]
        pairs += [("tokenizer.ggml.pre", "default"), ("tokenizer.ggml.tokens", tokens),
                  ("tokenizer.ggml.scores", scores), ("tokenizer.ggml.token_type", types),
                  ("tokenizer.ggml.add_space_prefix", tokenizer.tokenize("a")[0].startswith("\u2581"))]
    for key, token_id in (("bos", tokenizer.bos_token_id), ("eos", tokenizer.eos_token_id),
                          ("unknown", tokenizer.unk_token_id), ("padding", tokenizer.pad_token_id)):
        if token_id is not None:
            pairs.append((f"tokenizer.ggml.{key}_token_id", token_id))
    plain, special = tokenizer.encode("a", add_special_tokens=False), tokenizer.encode("a")
    pairs += [("tokenizer.ggml.add_bos_token", len(special) > len(plain) and special[0] == tokenizer.bos_token_id),
              ("tokenizer.ggml.add_eos_token", len(special) > len(plain) and special[-1] == tokenizer.eos_token_id)]
    template = chat_template or tokenizer.chat_template
    if template:
        pairs.append(("tokenizer.chat_template", template))
    return pairs


def _ggml_model(tokenizer, spec: dict) -> str:
    """llama.cpp's name for the tokenizer: "gpt2" (byte-level BPE) or "llama" (sentencepiece-style BPE with byte
    fallback, as Gemma's)."""
    model, pre = spec["model"], json.dumps(spec.get("pre_tokenizer"))
    if model.get("type") == "BPE" and '"ByteLevel"' in pre:
        return "gpt2"
    if model.get("type") == "BPE" and model.get("byte_fallback"):
        return "llama"
    raise GGUFExportError(
        f"{type(tokenizer).__name__} ({model.get('type')} model) is not a tokenizer fastft writes to GGUF",
        hint="use the base model's own tokenizer (byte-level BPE for Llama-3/Qwen, sentencepiece BPE for Gemma)",
    )


def _pre_tokenizer(tokenizer) -> str:
    pieces = [piece for piece, _ in tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str(_PROBE)]
    digest = hashlib.sha256(json.dumps(pieces).encode()).hexdigest()[:16]
    if digest not in _PRE_TOKENIZERS:
        raise GGUFExportError(
            "the tokenizer splits text in a way llama.cpp knows under no name fastft writes "
            f"({', '.join(sorted(set(_PRE_TOKENIZERS.values())))})",
            hint="export with the base model's own tokenizer, or convert with llama.cpp's convert_hf_to_gguf.py",
        )
    return _PRE_TOKENIZERS[digest]


def _vocabulary(tokenizer, n_rows: int, byte_tokens: bool) -> tuple[list[str], list[int]]:
    """Token texts and llama.cpp token types by id, padded to the embedding's rows as llama.cpp's converter pads."""
    from gguf import TokenType

    vocab = tokenizer.get_vocab()
    if max(vocab.values()) >= n_rows:
        raise GGUFExportError(
            f"the tokenizer has ids up to {max(vocab.values())} but the model's embedding has {n_rows} rows",
            hint="save the model after model.resize_token_embeddings(len(tokenizer))",
        )
    tokens = [f"[PAD{i}]" for i in range(n_rows)]
    types = [TokenType.UNUSED] * n_rows
    for text, token_id in vocab.items():
        tokens[token_id] = text
        is_byte = byte_tokens and len(text) == 6 and text.startswith("<0x") and text.endswith(">")
        types[token_id] = TokenType.BYTE if is_byte else TokenType.NORMAL
    for token_id, added in tokenizer.added_tokens_decoder.items():
        types[token_id] = TokenType.CONTROL if added.special else TokenType.USER_DEFINED
    if tokenizer.unk_token_id is not None:
        types[tokenizer.unk_token_id] = TokenType.UNKNOWN
    return tokens, [int(t) for t in types]


def _merge_scores(tokens: list[str], merges: list[list[str]]) -> list[float]:
    """Sentencepiece scores that make llama.cpp merge in the tokenizer's order: llama.cpp merges the adjacent pair
    whose joined token scores highest, a BPE the pair ranked first, so a token scores minus the rank of the first
    merge that builds it. Tokens no merge builds (characters, bytes, specials) score below every merge."""
    rank = {}
    for position, (left, right) in enumerate(merges):
        rank.setdefault(left + right, position)
    return [-float(rank.get(token, len(merges))) for token in tokens]


def _add(writer, key: str, value) -> None:
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_uint32(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    else:
        writer.add_array(key, value)  # element type from the first element: str, float, bool or int32

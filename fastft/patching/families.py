"""The model families fastft patches, and what differs between them.

Each family's decoder uses classes named <prefix>RMSNorm, <prefix>Attention and <prefix>MLP in one transformers
modeling module, whose attention calls that module's apply_rotary_pos_emb. Bllossom is a Llama, Qwen2.5 a Qwen2,
CodeGemma a Gemma; Gemma 3's text decoder (Gemma3TextModel) also sits inside Gemma3ForConditionalGeneration.
"""
import importlib
from dataclasses import dataclass

# Activation names (as configs spell them) -> the gated activation lora_mlp fuses. Only exact matches:
# gelu_new / gelu_fast are tanh approximations too, but round differently from torch's gelu(approximate="tanh").
_GATED = {"silu": "swiglu", "swish": "swiglu", "gelu_pytorch_tanh": "geglu"}


@dataclass(frozen=True)
class Family:
    name: str
    modeling: str  # transformers module holding the classes and apply_rotary_pos_emb
    prefix: str  # class-name prefix: <prefix>RMSNorm, <prefix>Attention, <prefix>MLP
    norm_offset: float  # Gemma scales by (1 + w), Llama and Qwen by w
    eps_attr: str  # the RMSNorm module's epsilon attribute
    act_attr: str  # the config field the MLP builds its activation from

    def module(self):
        return importlib.import_module(self.modeling)

    def cls(self, suffix: str):
        return getattr(self.module(), self.prefix + suffix)

    @property
    def cast_before_weight(self) -> bool:
        # Llama/Qwen round the normalised rows to the input dtype before the weight; Gemma scales in fp32 first.
        return self.norm_offset == 0.0

    def gated_activation(self, text_config) -> tuple[str | None, str]:
        """(lora_mlp's activation or None, the config's activation name)."""
        name = getattr(text_config, self.act_attr, None)
        return _GATED.get(name), str(name)


_LLAMA_LIKE = dict(norm_offset=0.0, eps_attr="variance_epsilon", act_attr="hidden_act")
_GEMMA_LIKE = dict(norm_offset=1.0, eps_attr="eps", act_attr="hidden_activation")
_MODELS = "transformers.models."

FAMILIES = {
    "llama": Family("llama", _MODELS + "llama.modeling_llama", "Llama", **_LLAMA_LIKE),
    "qwen2": Family("qwen2", _MODELS + "qwen2.modeling_qwen2", "Qwen2", **_LLAMA_LIKE),
    "qwen3": Family("qwen3", _MODELS + "qwen3.modeling_qwen3", "Qwen3", **_LLAMA_LIKE),
    # Gemma 1 builds its MLP from hidden_act; Gemma 2 and 3 from hidden_activation.
    "gemma": Family("gemma", _MODELS + "gemma.modeling_gemma", "Gemma", **{**_GEMMA_LIKE, "act_attr": "hidden_act"}),
    "gemma2": Family("gemma2", _MODELS + "gemma2.modeling_gemma2", "Gemma2", **_GEMMA_LIKE),
    "gemma3_text": Family("gemma3", _MODELS + "gemma3.modeling_gemma3", "Gemma3", **_GEMMA_LIKE),
}


def text_config(model):
    """The decoder's config (the text part of a multimodal config); None for a model without a config."""
    config = getattr(model, "config", None)
    return None if config is None else config.get_text_config()


def family_of(model) -> tuple[Family | None, str]:
    """(the family, or None when fastft has no patches for it; the config's model_type)."""
    model_type = getattr(text_config(model), "model_type", "unknown")
    return FAMILIES.get(model_type), model_type

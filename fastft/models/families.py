"""The model families fastft knows: their `auto` presets and what its patches need to know about them.

Keyed by the decoder's model_type (the text part of a multimodal config). Each family's decoder uses classes named
<prefix>RMSNorm, <prefix>Attention and <prefix>MLP in one transformers modeling module, whose attention calls that
module's apply_rotary_pos_emb. Bllossom is a Llama, Qwen2.5 a Qwen2, CodeGemma a Gemma; Gemma 3's text decoder
(Gemma3TextModel) also sits inside Gemma3ForConditionalGeneration.
"""
import importlib
from dataclasses import dataclass

from ..config.schema import SEVEN_PROJECTIONS

# Activation names (as configs spell them) -> the gated activation lora_mlp fuses. Only exact matches:
# gelu_new / gelu_fast are tanh approximations too, but round differently from torch's gelu(approximate="tanh").
_GATED = {"silu": "swiglu", "swish": "swiglu", "gelu_pytorch_tanh": "geglu"}


@dataclass(frozen=True)
class Preset:
    """What `auto` in a recipe becomes for a family."""

    targets: tuple[str, ...] = tuple(SEVEN_PROJECTIONS)
    qlora_compute: str = "bfloat16"  # on a GPU; the CPU always computes in fp32


GENERIC = Preset()  # a model fastft has no family for


@dataclass(frozen=True)
class Family:
    name: str
    modeling: str  # transformers module holding the classes and apply_rotary_pos_emb
    prefix: str  # class-name prefix: <prefix>RMSNorm, <prefix>Attention, <prefix>MLP
    norm_offset: float  # Gemma scales by (1 + w), Llama and Qwen by w
    eps_attr: str  # the RMSNorm module's epsilon attribute
    act_attr: str  # the config field the MLP builds its activation from
    preset: Preset = GENERIC

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
_QWEN = Preset(qlora_compute="float16")  # the seed notebooks trained Qwen in fp16
_MODELS = "transformers.models."

FAMILIES = {
    "llama": Family("llama", _MODELS + "llama.modeling_llama", "Llama", **_LLAMA_LIKE),
    "qwen2": Family("qwen2", _MODELS + "qwen2.modeling_qwen2", "Qwen2", **_LLAMA_LIKE, preset=_QWEN),
    "qwen3": Family("qwen3", _MODELS + "qwen3.modeling_qwen3", "Qwen3", **_LLAMA_LIKE, preset=_QWEN),
    # Gemma 1 builds its MLP from hidden_act; Gemma 2 and 3 from hidden_activation.
    "gemma": Family("gemma", _MODELS + "gemma.modeling_gemma", "Gemma", **{**_GEMMA_LIKE, "act_attr": "hidden_act"}),
    "gemma2": Family("gemma2", _MODELS + "gemma2.modeling_gemma2", "Gemma2", **_GEMMA_LIKE),
    "gemma3_text": Family("gemma3", _MODELS + "gemma3.modeling_gemma3", "Gemma3", **_GEMMA_LIKE),
}


def text_config(config):
    """The decoder's part of a model config (the text part of a multimodal one); None for None."""
    return None if config is None else config.get_text_config()


def family_for(config) -> tuple[Family | None, str]:
    """(the family, or None when fastft has none for it; the decoder's model_type, "unknown" without a config)."""
    model_type = getattr(text_config(config), "model_type", "unknown")
    return FAMILIES.get(model_type), model_type

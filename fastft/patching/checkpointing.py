"""training.gradient_checkpointing: selective. transformers' checkpointing stays off and every layer keeps what it
saves for backward, except the fused LoRA MLP blocks: lora_mlp keeps its input and recomputes gate(x) and up(x) in
backward (two base matmuls per block) instead of keeping them (2 x [tokens, intermediate]), the largest saved
tensors of a decoder layer. Attention, its projections and the norms keep theirs: recomputing them costs more (the
whole layer, as full checkpointing does) or saves little (rms_norm already keeps only its input and 1/rms)."""
from ..errors import FastftError

SELECTIVE = "selective"
_WHERE = "training.gradient_checkpointing"


def full_checkpointing(mode) -> bool:
    """Whether transformers checkpoints whole layers: true only; selective is fastft's own and false is none."""
    return mode is True


def check_selective(recipe, backend: str) -> None:
    """Refuse selective checkpointing where fastft's fused MLP cannot run, before any weight loads."""
    if recipe.training.gradient_checkpointing != SELECTIVE:
        return
    if backend == "unsloth":
        raise FastftError("selective recomputes inside fastft's fused MLP kernel, and Unsloth's models run their own "
                          "MLP code", where=_WHERE,
                          hint="use gradient_checkpointing: true (Unsloth's checkpointing) or false, or model.backend: hf")
    if not recipe.kernels.mlp:
        raise FastftError("selective recomputes inside fastft's fused MLP kernel, and kernels.mlp is false",
                          where=_WHERE, hint="set kernels.mlp: true, or gradient_checkpointing: true (whole layers) "
                                             "or false")


def selective_note(report) -> str:
    """The start-up summary's line on what selective checkpointing recomputes in this model."""
    blocks = report.counts["mlp"]
    if blocks:
        return (f"selective checkpointing: lora_mlp recomputes gate and up in backward in {blocks} MLP blocks; "
                "attention and norms keep their saved tensors")
    return ("selective checkpointing: no MLP block runs lora_mlp in this model (see the mlp lines), so nothing is "
            "recomputed: memory as with gradient_checkpointing: false")

"""fastft.kernels: Triton kernels for LoRA fine-tuning, each with a PyTorch implementation of the same algorithm
(`embedding`, a gather with trained rows spliced in, and `blocked_linear`, a head stored narrower than it computes,
have only the PyTorch one).

Importable with only torch and triton installed; nothing here imports fastft.
CUDA tensors run Triton; CPU tensors run the PyTorch path unless TRITON_INTERPRET=1 or
FASTFT_KERNEL_BACKEND=triton (FASTFT_KERNEL_BACKEND=torch forces PyTorch everywhere).
"""
if __name__ == "kernels":
    # This folder is fastft.kernels. Run from a checkout (`python -m pytest`, `python -m bench...`), the repository
    # root is on sys.path and this folder answers to the top-level name `kernels`, which is Hugging Face's package
    # (transformers and bitsandbytes import it): hand the name to that package, or be absent as it is.
    from ._top_level import hand_over_name

    hand_over_name(__file__)
else:
    from .activations import geglu, swiglu
    from .attention import attention
    from .cross_entropy import cross_entropy
    from .embedding import embedding
    from .linear_cross_entropy import blocked_linear, linear_cross_entropy
    from .lora import lora_linear, lora_mlp
    from .rms_norm import rms_norm
    from .rope import apply_rope

    __all__ = [
        "apply_rope",
        "attention",
        "blocked_linear",
        "cross_entropy",
        "embedding",
        "geglu",
        "linear_cross_entropy",
        "lora_linear",
        "lora_mlp",
        "rms_norm",
        "swiglu",
    ]

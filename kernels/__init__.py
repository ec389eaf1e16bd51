"""fastft.kernels: Triton kernels for LoRA fine-tuning, each with a PyTorch implementation of the same algorithm.

Importable with only torch and triton installed; nothing here imports fastft.
CUDA tensors run Triton; CPU tensors run the PyTorch path unless TRITON_INTERPRET=1 or
FASTFT_KERNEL_BACKEND=triton (FASTFT_KERNEL_BACKEND=torch forces PyTorch everywhere).
"""

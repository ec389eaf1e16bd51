"""apply_rope (Triton under the interpreter, and the PyTorch path) against transformers' apply_rotary_pos_emb."""
import importlib

import pytest
import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from tests.kernels.numerics import assert_rel_close
from tests.kernels.test_rms_norm import poisoned_allocations, record_calls

rope_mod = importlib.import_module("fastft.kernels.rope")
triton_rope = importlib.import_module("fastft.kernels.triton_rope")
apply_rope = rope_mod.apply_rope

# (B, T, Hq, Hk, D): odd T, GQA; 40 heads at D=256 need two head blocks per program in the Triton kernel
SHAPES = [(2, 37, 6, 2, 64), (1, 19, 4, 4, 128), (2, 13, 3, 1, 256), (1, 5, 40, 8, 256)]
SHAPE_IDS = ["x".join(map(str, s)) for s in SHAPES]


def _inputs(shape, dtype, seed, shared_positions=False):
    """q, k as attention code makes them ([B, T, H, D].transpose(1, 2)), cos/sin from Llama's rotary embedding."""
    batch, seq_len, n_q, n_k, head_dim = shape
    gen = torch.Generator().manual_seed(seed)
    config = LlamaConfig(hidden_size=n_q * head_dim, num_attention_heads=n_q, num_key_value_heads=n_k,
                         head_dim=head_dim, max_position_embeddings=4096)
    if shared_positions:  # batch-1 cos/sin, broadcast over the batch
        positions = torch.arange(seq_len)[None]
    else:  # a different offset per sequence, so a wrong batch stride shows
        positions = torch.arange(seq_len)[None] + torch.randint(0, 1000, (batch, 1), generator=gen)
    cos, sin = LlamaRotaryEmbedding(config)(torch.empty(0, dtype=dtype), positions)
    q = torch.randn(batch, seq_len, n_q, head_dim, generator=gen).to(dtype).transpose(1, 2)
    k = torch.randn(batch, seq_len, n_k, head_dim, generator=gen).to(dtype).transpose(1, 2)
    dq_out, dk_out = torch.randn(q.shape, generator=gen).to(dtype), torch.randn(k.shape, generator=gen).to(dtype)
    return q, k, cos, sin, dq_out, dk_out


def _forward_backward(fn, q, k, cos, sin, dq_out, dk_out):
    q, k = q.detach().clone().requires_grad_(), k.detach().clone().requires_grad_()
    q_rot, k_rot = fn(q, k, cos, sin)
    torch.autograd.backward((q_rot, k_rot), (dq_out.to(q_rot.dtype), dk_out.to(k_rot.dtype)))
    return q_rot.detach(), k_rot.detach(), q.grad, k.grad


def _check(out, ref, name, same_dtypes=True):
    """Values within the tolerance of each output's dtype; by default also the dtypes transformers gives."""
    for got, want, what in zip(out, ref, ("q_rot", "k_rot", "dq", "dk")):
        assert not same_dtypes or got.dtype == want.dtype, f"{name} {what}: dtype {got.dtype} != {want.dtype}"
        assert_rel_close(got, want, got.dtype, name=f"{name} {what}")


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("backend", ["triton_backend", "torch_backend"])
def test_fp32_matches_transformers(shape, backend, request):
    request.getfixturevalue(backend)
    inputs = _inputs(shape, torch.float32, seed=1)
    ref = _forward_backward(apply_rotary_pos_emb, *inputs)
    with poisoned_allocations():
        _check(_forward_backward(apply_rope, *inputs), ref, backend)


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_triton_matches_torch_path(shape, monkeypatch):
    inputs = _inputs(shape, torch.float32, seed=2)
    monkeypatch.setenv("FASTFT_KERNEL_BACKEND", "torch")
    ref = _forward_backward(apply_rope, *inputs)
    monkeypatch.setenv("FASTFT_KERNEL_BACKEND", "triton")
    _check(_forward_backward(apply_rope, *inputs), ref, "triton vs torch")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES[:3], ids=SHAPE_IDS[:3])
@pytest.mark.parametrize("backend", ["triton_backend", "torch_backend"])
def test_half_precision_against_fp32_reference(shape, dtype, backend, request):
    """Half q, k, cos, sin; the reference is apply_rotary_pos_emb in fp32 on the same (rounded) values."""
    request.getfixturevalue(backend)
    inputs = _inputs(shape, dtype, seed=3)
    ref = _forward_backward(apply_rotary_pos_emb, *(t.float() for t in inputs))
    with poisoned_allocations():
        out = _forward_backward(apply_rope, *inputs)
    _check(out, ref, f"{dtype} {backend}", same_dtypes=False)
    hf_half = _forward_backward(apply_rotary_pos_emb, *inputs)
    _check(out, hf_half, f"{dtype} {backend} vs HF in half precision")


@pytest.mark.parametrize("backend", ["triton_backend", "torch_backend"])
def test_batch_one_tables_and_fp32_tables_on_bf16(backend, request):
    """cos/sin of batch 1 broadcast over B; fp32 tables with bf16 q/k give fp32 outputs and bf16 gradients,
    as in transformers."""
    request.getfixturevalue(backend)
    q, k, cos, sin, dq_out, dk_out = _inputs((3, 11, 4, 2, 64), torch.bfloat16, seed=4, shared_positions=True)
    assert cos.shape[0] == 1
    inputs = (q, k, cos.float(), sin.float(), dq_out, dk_out)
    _check(_forward_backward(apply_rope, *inputs), _forward_backward(apply_rotary_pos_emb, *inputs), backend)


def test_rejects_mismatched_shapes():
    q, k, cos, sin, _, _ = _inputs((1, 7, 2, 2, 64), torch.float32, seed=5)
    with pytest.raises(ValueError, match="cos/sin"):
        apply_rope(q, k, cos[:, :6], sin[:, :6])
    with pytest.raises(ValueError, match="even D"):
        apply_rope(q[..., :63], k[..., :63], cos[..., :63], sin[..., :63])


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_dispatch_follows_env_var(backend, monkeypatch):
    calls = record_calls(monkeypatch, [(triton_rope, "rope_rotate", "triton"), (rope_mod, "torch_rope_rotate", "torch")])
    monkeypatch.setenv("FASTFT_KERNEL_BACKEND", backend)
    _forward_backward(apply_rope, *_inputs((1, 3, 2, 1, 64), torch.float32, seed=6))
    assert calls == [backend] * 4  # q and k, forward and backward

"""Patched vs unpatched: same prompt-masked loss (fp32, relative 1e-5) and LoRA gradients (relative 1e-4).

The reference is the same model before apply_kernels (transformers' and PEFT's own modules), with the loss on
the PyTorch kernel path, so the Triton run is compared against code it shares nothing with but the weights.
"""
import pytest
import torch

from fastft.patching import apply_kernels
from fastft.patching.loss import prompt_masked_loss
from tests.kernels.numerics import assert_rel_close
from tests.test_patch_models import FAMILIES, lora_grads, on, prompt_masked_batch, tiny_peft

# The interpreter runs every kernel program in Python: a smaller batch keeps the Triton runs to seconds.
SMALL = dict(batch=2, length=9, prompt=5)


@pytest.fixture(scope="session")
def base_folders(tmp_path_factory):
    """One saved checkpoint per family for the QLoRA runs (bitsandbytes quantizes while loading)."""
    return lambda family: tmp_path_factory.getbasetemp() / f"base-{family}"


def loss_and_grads(model, batch):
    model.zero_grad()
    loss = prompt_masked_loss(model, batch)
    loss.backward()
    return loss.detach(), lora_grads(model)


def assert_parity(model, batch, monkeypatch, backend: str):
    monkeypatch.setenv("FASTFT_KERNEL_BACKEND", "torch")
    ref_loss, ref_grads = loss_and_grads(model, batch)
    report = apply_kernels(model)
    assert report.counts["lora"] == 14 and report.counts["mlp"] == 2 and report.counts["rope"] == 2, report.lines()
    assert not report.fallbacks, report.lines()
    monkeypatch.setenv("FASTFT_KERNEL_BACKEND", backend)
    loss, grads = loss_and_grads(model, batch)
    assert_rel_close(loss, ref_loss, tol=1e-5, name="loss")
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        assert_rel_close(grad, ref_grads[name], tol=1e-4, name=name)


@pytest.mark.parametrize("quantized", [False, True], ids=["lora", "qlora"])
@pytest.mark.parametrize("family", FAMILIES)
def test_torch_path_matches_unpatched(family, quantized, base_folders, monkeypatch):
    model = tiny_peft(family, base_folders(family) if quantized else None)
    assert_parity(model, prompt_masked_batch(), monkeypatch, "torch")


@pytest.mark.parametrize("quantized", [False, True], ids=["lora", "qlora"])
@pytest.mark.parametrize("family", FAMILIES)
def test_triton_path_matches_unpatched(family, quantized, device, base_folders, monkeypatch):
    model = tiny_peft(family, base_folders(family) if quantized else None, device)
    batch = prompt_masked_batch(**SMALL) if device.type == "cpu" else prompt_masked_batch()
    assert_parity(model, on(device, batch), monkeypatch, "triton")


@pytest.mark.parametrize("family", FAMILIES)
def test_reference_loss_is_transformers_own(family):
    """The unpatched prompt-masked loss equals model(**inputs).loss (HF shifts, softcaps and averages itself)."""
    model, batch = tiny_peft(family), prompt_masked_batch()
    with torch.no_grad():
        assert_rel_close(prompt_masked_loss(model, batch), model(**batch).loss, tol=1e-5, name="loss")


@pytest.mark.parametrize("family", ["qwen3", "gemma3"])
def test_eval_logits_and_greedy_generation_unchanged(family):
    """Only internals are replaced: eval still returns full logits, and generation (KV cache) picks the same tokens."""
    model, batch = tiny_peft(family).eval(), prompt_masked_batch()
    prompt = batch["input_ids"][:, :6]
    with torch.no_grad():
        ref_logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        ref_tokens = model.generate(input_ids=prompt, max_new_tokens=5, do_sample=False)
        apply_kernels(model)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        tokens = model.generate(input_ids=prompt, max_new_tokens=5, do_sample=False)
    assert_rel_close(logits, ref_logits, tol=1e-5, name="logits")
    assert torch.equal(tokens, ref_tokens)


def test_trainable_biases_get_the_same_gradients(monkeypatch):
    """lora.bias: all makes Qwen2's q/k/v biases trainable; lora_linear returns their gradient too."""
    model = tiny_peft("qwen2", bias="all")
    assert any(name.endswith("q_proj.base_layer.bias") for name, p in model.named_parameters() if p.requires_grad)
    assert_parity(model, prompt_masked_batch(), monkeypatch, "torch")


@pytest.mark.parametrize("family", FAMILIES)
def test_norms_round_like_transformers_in_bf16(family, torch_backend):
    """fp32 cannot tell Llama's cast order (round, then scale) from Gemma's (scale, then round); bf16 can: the
    wrong order changes about a quarter of the outputs, the right one none."""
    model = tiny_peft(family).to(torch.bfloat16)
    apply_kernels(model)
    norms = [m for m in model.modules() if type(m).__name__.endswith("RMSNorm")]
    assert norms and all("forward" in m.__dict__ for m in norms)
    x = 3 * torch.randn(7, 40, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    for norm in norms:
        x_norm = x[..., : norm.weight.shape[0]]  # q/k norms act on head_dim
        assert torch.equal(norm(x_norm), type(norm).forward(norm, x_norm))

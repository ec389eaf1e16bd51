"""model.dtype: bfloat16 on the CPU, through the build `fastft run` uses (training/build.py): base weights in bf16,
LoRA weights and AdamW state in fp32 (PEFT keeps adapters fp32), fastft's kernels patched and their matmuls in bf16;
20 steps of a tiny Llama and a tiny Gemma 3 end within 1e-2 of the same 20 steps in fp32. And `auto`: fp32 on every
CPU, naming a native bf16 (fastft.runtime.cpu) in the start-up summary so the user can choose it.

On a CPU without native bf16 (this project's AVX2 machines) torch emulates the bf16 matmuls, so the bf16 runs here
prove the numbers, not the speed (bench/ measures speed, and skips bf16 rows on such CPUs).
"""
from collections import Counter
from dataclasses import dataclass

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fastft.commands.summary import model_summary
from fastft.config.loader import load_recipe
from fastft.kernels.linear_cross_entropy import CPU_VOCAB_BLOCK
from fastft.models.loader import dtype_choice
from fastft.runtime import cpu
from tests.factories import fastft_trainer, recipe_for
from tests.test_train_tokens import tiny_gemma3_checkpoint

pytestmark = pytest.mark.slow  # four 20-step training runs
STEPS = 20
# tests/factories' learning rate, 3e-3 decaying linearly (at 1e-2 held constant the tiny Llama's bf16 run ended 1.3e-2
# above fp32's, though each kernel alone in bf16 ended within 2e-3 of it, and transformers+PEFT's bf16 within 1e-3)
OVERRIDES = [f"training.max_steps={STEPS}", "training.batch_size=2", "training.grad_accum=1", "lora.dropout=0.0",
             "dataset.max_prompt_tokens=96", "dataset.max_answer_tokens=32"]
PATCHED = {"llama": {"lora": 14, "mlp": 2, "rms_norm": 5, "rope": 2, "attention": 2},
           "gemma3": {"lora": 14, "mlp": 2, "rms_norm": 13, "rope": 2, "attention": 2}}  # Gemma 3 adds 4 norms a layer and q/k norms
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="auto decides for the GPU there")


@pytest.fixture(scope="module")
def models(tiny_llama, tmp_path_factory):
    return {"llama": tiny_llama, "gemma3": tiny_gemma3_checkpoint(tiny_llama, tmp_path_factory.mktemp("gemma3"))}


def build(folder, tmp_path, dtype: str):
    recipe = load_recipe(recipe_for(tmp_path, folder), [f"model.dtype={dtype}", *OVERRIDES])
    trainer, loaded = fastft_trainer(recipe, tmp_path / "checkpoints")
    return recipe, trainer, loaded


def first_batch(trainer) -> dict:
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    batch.pop("example_ids", None)
    return batch


def own_loss(trainer, batch) -> float:
    """The trainer's own loss (fastft's prompt-masked one) on `batch`, in the model's dtype, without gradients."""
    model = trainer.model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch)).item()
    model.train()
    return loss


@dataclass
class Run:
    trainer: object
    loaded: object
    before: float  # loss on the first batch before training
    after: float  # the same after STEPS steps


@pytest.fixture(scope="module", params=["llama", "gemma3"])
def runs(request, models, tmp_path_factory) -> dict:
    """{dtype: Run} of the same recipe, data and seed trained STEPS steps in fp32 and in bf16."""
    out = {}
    for dtype in ("float32", "bfloat16"):
        _, trainer, loaded = build(models[request.param], tmp_path_factory.mktemp(f"{request.param}-{dtype}"), dtype)
        batch = first_batch(trainer)
        before = own_loss(trainer, batch)
        trainer.train()
        out[dtype] = Run(trainer, loaded, before, own_loss(trainer, batch))
    return out


def test_bf16_training_ends_within_1e2_of_fp32(runs):
    fp32, bf16 = runs["float32"], runs["bfloat16"]
    print(f"loss on the first batch: fp32 {fp32.before:.5f} -> {fp32.after:.5f}, bf16 {bf16.before:.5f} -> {bf16.after:.5f}")
    # the steps moved the loss by more than the tolerance: not a comparison of two barely trained models
    assert fp32.before - fp32.after > 1e-2 * fp32.before
    assert bf16.after == pytest.approx(fp32.after, rel=1e-2)
    assert bf16.after != fp32.after  # the bf16 run computed in bf16, not silently in fp32


def test_base_weights_bf16_lora_and_optimizer_state_fp32(runs):
    for dtype, run in runs.items():
        model, optimizer = run.trainer.model, run.trainer.optimizer
        assert run.loaded.dtype == getattr(torch, dtype)
        frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
        trained = [p for p in model.parameters() if p.requires_grad]
        assert frozen == {getattr(torch, dtype)}
        assert {p.dtype for p in trained} == {torch.float32}
        states = [optimizer.state[p] for p in trained]
        assert all(state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.float32 for state in states)


class MatmulDtypes(TorchDispatchMode):
    """FLOPs of every matmul that runs, by (operand dtype, right operand's shape); attention kernels by dtype."""

    aten = torch.ops.aten  # position of the left operand; in-place and out= forms too (addmm_ accumulates, mm out=)
    MATMULS = {aten.mm.default: 0, aten.mm.out: 0, aten.bmm.default: 0, aten.addmm.default: 1, aten.addmm.out: 1,
               aten.addmm_.default: 1, aten.baddbmm.default: 1}

    def __init__(self):
        super().__init__()
        self.flops, self.attention = Counter(), Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in self.MATMULS:
            a, b = args[self.MATMULS[func]:][:2]
            self.flops[(a.dtype, b.dtype, tuple(b.shape))] += 2 * a.numel() * b.shape[-1]
        elif "scaled_dot_product" in func.__name__:
            self.attention[args[0].dtype] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_kernels_patched_and_computing_in_bf16(family, models, tmp_path):
    _, trainer, loaded = build(models[family], tmp_path, "bfloat16")
    assert dict(loaded.kernels.counts) == PATCHED[family], loaded.kernels.lines()
    assert not loaded.kernels.fallbacks and loaded.kernels.uses("loss"), loaded.kernels.lines()
    seen = MatmulDtypes()
    with seen:
        trainer.compute_loss(trainer.model, first_batch(trainer)).backward()
    head = trainer.model.get_output_embeddings().weight
    fp32 = {key: n for key, n in seen.flops.items() if key[:2] != (torch.bfloat16, torch.bfloat16)}
    # The one fp32 product is by design: on the CPU linear_cross_entropy contracts the logits' gradient with an fp32
    # copy of the head (a bf16 GEMM of that long-K shape ran ~70x slower there), block by block of the head's rows.
    n_vocab, hidden = head.shape
    block = CPU_VOCAB_BLOCK
    assert set(fp32) <= {(torch.float32, torch.float32, (rows, hidden)) for rows in (min(block, n_vocab), n_vocab % block)}
    assert fp32, "no fp32 product against the head"
    assert sum(seen.flops.values()) > 10 * sum(fp32.values())
    assert set(seen.attention) == {torch.bfloat16}  # forward and backward of sdpa


@no_gpu
@pytest.mark.parametrize("native", [None, "AVX512-BF16", "AMX"])
def test_auto_keeps_fp32_on_every_cpu(native, monkeypatch):
    # bf16 is not yet shown faster at an equal loss on a real model: one step of Gemma 3 270M lowered the loss 5.96 ->
    # 4.58 in bf16 against 5.94 -> 4.08 in fp32 (transformers+PEFT bf16 likewise, 4.55), so auto does not pick it
    monkeypatch.setattr(cpu, "native_bf16", lambda: native)
    assert dtype_choice("auto")[0] == torch.float32
    assert dtype_choice("bfloat16") == (torch.bfloat16, "set in the recipe")
    assert dtype_choice("float32") == (torch.float32, "set in the recipe")


@pytest.mark.parametrize("capabilities, native", [
    ({"avx2": True}, None), ({"avx512_f": True, "avx512_bf16": False}, None),
    ({"avx512_bf16": True}, "AVX512-BF16"), ({"avx512_bf16": True, "amx_bf16": True}, "AMX"), ({}, None)])
def test_native_bf16_names_the_instruction_set(capabilities, native, monkeypatch):
    monkeypatch.setattr(cpu, "_capabilities", lambda: capabilities)
    assert cpu.native_bf16() == native


def test_native_bf16_agrees_with_torch_on_this_cpu():
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if None in probes:
        pytest.skip("this torch lacks the private probes to compare with")
    assert (cpu.native_bf16() is not None) == any(probe() for probe in probes)


@no_gpu
@pytest.mark.parametrize("native, line", [
    ("AVX512-BF16", "dtype float32 (auto: fp32 on the CPU; it multiplies bf16 natively (AVX512-BF16): "
                    "model.dtype: bfloat16 to try it)"),
    (None, "dtype float32 (auto: fp32 on the CPU, which has no native bf16 (AVX512-BF16 or AMX))")])
def test_start_up_summary_says_what_auto_chose_and_why(native, line, models, tmp_path, monkeypatch):
    monkeypatch.setattr(cpu, "native_bf16", lambda: native)
    recipe, trainer, loaded = build(models["llama"], tmp_path, "auto")
    assert {p.dtype for p in trainer.model.parameters() if not p.requires_grad} == {loaded.dtype}
    lines = []
    model_summary(lines.append, recipe, loaded, "adamw_torch", trainer.args)
    device = next(text for text in lines if text.lstrip().startswith("device"))
    assert f"device     cpu, {line}, optimizer adamw_torch" in device

"""What stays on the plain path, why the report says so, and that patching never changes what a model computes."""
import pytest
import torch
from torch import nn

from fastft.config.schema import KernelsSection
from fastft.patching import apply_kernels
from fastft.patching import lora as patch_lora_module
from fastft.patching import mlp as patch_mlp_module
from fastft.patching import rope as patch_rope_module
from fastft.patching.install import installed
from fastft.patching.loss import prompt_masked_loss
from tests.kernels.numerics import assert_rel_close
from tests.test_patch_models import prompt_masked_batch, tiny_base, tiny_config, tiny_peft, with_lora

pytestmark = pytest.mark.usefixtures("torch_backend")


def loss_of(model, batch=None):
    with torch.no_grad():
        return prompt_masked_loss(model, batch or prompt_masked_batch())


def patched_keeps_loss(model):
    before = loss_of(model)
    report = apply_kernels(model)
    assert_rel_close(loss_of(model), before, tol=1e-5, name="loss")
    return report


def fallback_lines(report, kind):
    return [line for line in report.lines() if line.startswith(f"{kind}: plain path")]


def test_report_lines_count_each_kind():
    report = apply_kernels(tiny_peft("llama"))
    assert report.lines() == [
        "llama: lora_linear on 14 LoRA projections; lora_mlp on 2 MLP blocks; rms_norm on 5 RMSNorm modules; "
        "apply_rope in 2 attention layers; block-skipping CPU attention in 2 attention layers",
        "self-check skipped on CPU: PyTorch paths run",
        "loss: linear_cross_entropy on labelled positions only (training.loss.prompt_masked_loss)",
    ]


def test_dora_layers_stay_plain_and_say_why():
    report = patched_keeps_loss(tiny_peft("gemma3", use_dora=True))
    assert report.counts["lora"] == 0 and report.counts["mlp"] == 0
    assert report.counts["rms_norm"] == 13 and report.counts["rope"] == 2  # the rest is still patched
    (lora_line,) = fallback_lines(report, "lora")
    assert lora_line == ("lora: plain path for 14 modules, first model.layers.0.self_attn.q_proj: "
                         "LoRA variant DoRA (use_dora=True) has no fused kernel")
    (mlp_line,) = fallback_lines(report, "mlp")
    assert mlp_line == ("mlp: plain path for 2 modules, first model.layers.0.mlp: "
                        "gate_proj: LoRA variant DoRA (use_dora=True) has no fused kernel")


def test_several_active_adapters_stay_plain():
    model = tiny_peft("qwen3")
    model.add_adapter("second", model.peft_config["default"])
    model.base_model.set_adapter(["default", "second"])
    report = patched_keeps_loss(model)
    assert report.counts["lora"] == 0
    assert "2 active adapters" in fallback_lines(report, "lora")[0]


def test_merged_adapter_stays_plain():
    model = tiny_peft("llama")
    model.merge_adapter()
    report = patched_keeps_loss(model)
    assert report.counts["lora"] == 0 and "merged into the base weight" in fallback_lines(report, "lora")[0]


def test_adapter_state_changed_after_patching_takes_the_plain_path():
    """Disabling or merging adapters later (DPO references, export) is checked at every call."""
    model, batch = tiny_peft("gemma").eval(), prompt_masked_batch()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        with_adapter = model(input_ids=ids, attention_mask=mask).logits
        with model.disable_adapter():
            base_only = model(input_ids=ids, attention_mask=mask).logits
        assert apply_kernels(model).counts["lora"] == 14
        with model.disable_adapter():
            assert_rel_close(model(input_ids=ids, attention_mask=mask).logits, base_only, tol=1e-5, name="disabled")
        model.merge_adapter()
        assert_rel_close(model(input_ids=ids, attention_mask=mask).logits, with_adapter, tol=1e-5, name="merged")


def test_activation_without_a_fused_kernel_keeps_the_mlp_plain():
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    config = tiny_config("llama")
    config.hidden_act = "relu"
    report = patched_keeps_loss(with_lora(LlamaForCausalLM(config)))
    assert report.counts["mlp"] == 0 and report.counts["lora"] == 14
    assert "activation relu has no fused gated kernel" in fallback_lines(report, "mlp")[0]


def test_unknown_architecture_gets_lora_kernels_only():
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(vocab_size=157, hidden_size=40, intermediate_size=72, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=10, initializer_range=0.3)
    report = patched_keeps_loss(with_lora(MistralForCausalLM(config)))
    assert report.family == "mistral" and report.counts["lora"] == 14
    assert sum(report.counts.values()) == 14
    assert any("no fastft patches for architecture mistral" in line for line in report.lines())


def test_conv1d_lora_layers_stay_plain():
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=157, n_embd=40, n_layer=2, n_head=4, n_positions=32))
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True))
    report = apply_kernels(model)
    assert report.counts["lora"] == 0 and "fan_in_fan_out" in fallback_lines(report, "lora")[0]


def test_recipe_switches_turn_kinds_off():
    model = tiny_peft("qwen2")
    report = apply_kernels(model, KernelsSection(lora=False, rms_norm=False, rope=False, loss=False))
    as_dict = {"lora": False, "rms_norm": False, "rope": False, "loss": False}
    assert apply_kernels(tiny_peft("qwen2"), as_dict).lines() == report.lines()
    assert dict(report.counts) == {"mlp": 2, "attention": 2}
    assert [line for line in report.lines() if "off in the recipe" in line] == [
        f"{kind}: off in the recipe (kernels.{kind}: false)" for kind in ("lora", "rms_norm", "rope", "loss")
    ]
    patched = [name for name, m in model.named_modules() if "forward" in m.__dict__]
    assert patched and all(name.endswith(".mlp") for name in patched)


def test_applying_twice_patches_once():
    model = tiny_peft("gemma2")
    first, second = apply_kernels(model), apply_kernels(model)
    assert first.counts == second.counts and not second.fallbacks
    attention = model.get_base_model().model.layers[0].self_attn
    assert installed(attention) is patch_rope_module.attention_forward


def test_other_models_of_the_family_keep_transformers_rope(monkeypatch):
    calls = []
    real = patch_rope_module.apply_rope
    monkeypatch.setattr(patch_rope_module, "apply_rope", lambda *a: calls.append(1) or real(*a))
    patched, plain = tiny_peft("llama"), tiny_peft("llama")
    plain_before = loss_of(plain)
    apply_kernels(patched)
    assert torch.equal(loss_of(plain), plain_before) and calls == []
    loss_of(patched)
    assert len(calls) == 2  # one per attention layer


def test_dropout_is_the_modules_in_training_and_zero_in_eval(monkeypatch):
    seen, mlp_seen = [], []
    real_linear, real_mlp = patch_lora_module.lora_linear, patch_mlp_module.lora_mlp
    monkeypatch.setattr(patch_lora_module, "lora_linear",
                        lambda *a, dropout_p, **k: seen.append(dropout_p) or real_linear(*a, dropout_p=dropout_p, **k))
    monkeypatch.setattr(patch_mlp_module, "lora_mlp",
                        lambda *a, dropout_p, **k: mlp_seen.append(dropout_p) or real_mlp(*a, dropout_p=dropout_p, **k))
    model = with_lora(tiny_base("llama"), dropout=0.25)
    apply_kernels(model)
    prompt_masked_loss(model, prompt_masked_batch()).backward()
    assert seen == [0.25] * 8 and mlp_seen == [0.25] * 2  # training: q/k/v/o per layer, and the fused MLP
    seen.clear()
    mlp_seen.clear()
    loss_of(model.eval())
    assert seen == [0.0] * 8 and mlp_seen == [0.0] * 2  # eval: the same calls without dropout


def test_forward_replaced_by_someone_else_is_left_alone():
    model = tiny_peft("llama")
    norm = model.get_base_model().model.norm
    foreign = norm.forward  # stands for an accelerate hook or another library's patch
    norm.forward = lambda x: foreign(x)
    report = apply_kernels(model)
    assert report.counts["rms_norm"] == 4 and norm.forward.__name__ == "<lambda>"
    assert "already replaced on the instance" in fallback_lines(report, "rms_norm")[0]


def test_4bit_weight_repacked_for_cpu_inference_falls_back():
    """bitsandbytes repacks NF4 weights in place for its CPU inference kernel; dequantize_4bit cannot read that
    layout, so the patched layer must hand over to PEFT's forward instead of computing with garbage."""
    import bitsandbytes as bnb
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    layer = bnb.nn.Linear4bit(64, 64, compute_dtype=torch.float32, quant_type="nf4").to("cpu")
    model = get_peft_model(nn.Sequential(layer), LoraConfig(r=4, target_modules=["0"], init_lora_weights=False))
    apply_kernels(model.eval())
    peft_layer, x = model.base_model.model[0], torch.randn(3, 64)
    with torch.no_grad():
        layer.forward(x)  # bitsandbytes' own eval forward, which repacks the weight where the CPU allows
        if not getattr(layer.weight.quant_state, "packing_format_for_cpu", False):
            pytest.skip("this CPU has no avx512bf16: bitsandbytes does not repack")
        assert "repacked" in patch_lora_module.kernel_adapter(peft_layer)[1]
        assert torch.equal(model(x), type(peft_layer).forward(peft_layer, x))

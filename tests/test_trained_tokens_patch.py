"""lora.train_tokens' input embedding through fastft.kernels.embedding (fastft/patching/trained_tokens.py) against
PEFT's own TrainableTokensLayer forward on the same tied Gemma 3: loss, every gradient, the disabled and merged
adapter states, and the saved adapter."""
import pytest
import torch
from safetensors.torch import load_file

from fastft.patching import apply_kernels
from fastft.patching.report import PatchReport
from fastft.patching.trained_tokens import patch_trained_tokens
from tests.kernels.numerics import assert_rel_close
from tests.test_loss import batch, lora_grads, tiny_gemma3_with_trained_tokens

TRAINED = [7, 150, 0, 3]  # 0 is Gemma's pad token: the embedding's padding_idx (no gradient from the lookup)
EMBED = "base_model.model.model.embed_tokens.token_adapter"


def _pair():
    """(patched, plain): the same model twice; only the first has fastft's embedding forward."""
    patched, plain = tiny_gemma3_with_trained_tokens(TRAINED), tiny_gemma3_with_trained_tokens(TRAINED)
    report = PatchReport()
    patch_trained_tokens(patched, report)
    assert report.fallbacks == {} and len(report.notes) == 1
    return patched, plain


def _inputs():
    inputs = batch()
    inputs["input_ids"][:, ::3] = torch.tensor(TRAINED).repeat(2)[:8]  # every trained id, the pad id included
    return inputs


def _loss_and_grads(model, inputs):
    model.zero_grad()
    loss = model(**inputs).loss
    loss.backward()
    return loss.detach(), lora_grads(model)


def test_loss_and_every_gradient_equal_peft_without_the_merged_table(monkeypatch):
    patched, plain = _pair()
    embed = patched.get_submodule(EMBED)
    monkeypatch.setattr(embed, "get_merged_weights", lambda *_: pytest.fail("the merged table was built"))
    inputs = _inputs()
    ours, ours_grads = _loss_and_grads(patched, inputs)
    reference, reference_grads = _loss_and_grads(plain, inputs)
    assert_rel_close(ours, reference, tol=1e-6, name="loss")
    assert ours_grads.keys() == reference_grads.keys()
    for name, grad in reference_grads.items():
        assert_rel_close(ours_grads[name], grad, tol=1e-6, name=name)
    assert any("trainable_tokens_delta" in name for name in reference_grads)


def test_apply_kernels_patches_the_embedding_and_says_so():
    model = tiny_gemma3_with_trained_tokens(TRAINED)
    report = apply_kernels(model, {"mlp": False, "rms_norm": False, "rope": False})
    assert "forward" in vars(model.get_submodule(EMBED))
    assert ("train_tokens: embedding with the trained rows spliced in (no merged copy of the table) for "
            "model.embed_tokens.token_adapter") in report.lines()
    unpatched = tiny_gemma3_with_trained_tokens(TRAINED)
    apply_kernels(unpatched, {"lora": False})
    assert "forward" not in vars(unpatched.get_submodule(EMBED))


def _logits(model, inputs):
    with torch.no_grad():
        return model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits


def test_disabled_and_merged_adapters_behave_as_peft():
    patched, plain = _pair()
    inputs = _inputs()
    for model in (patched, plain):
        model.eval()
    with patched.disable_adapter(), plain.disable_adapter():
        assert_rel_close(_logits(patched, inputs), _logits(plain, inputs), tol=1e-6, name="disabled")
    for model in (patched, plain):
        model.merge_adapter()
    assert patched.get_submodule(EMBED).merged
    assert_rel_close(_logits(patched, inputs), _logits(plain, inputs), tol=1e-6, name="merged")
    for model in (patched, plain):
        model.unmerge_adapter()
    assert_rel_close(_logits(patched, inputs), _logits(plain, inputs), tol=1e-6, name="unmerged again")


def test_a_merged_layer_at_patch_time_is_reported_and_left_to_peft():
    model = tiny_gemma3_with_trained_tokens(TRAINED)
    model.merge_adapter()
    report = PatchReport()
    patch_trained_tokens(model, report)
    assert report.lines()[1:] == ["train_tokens: plain path for model.embed_tokens.token_adapter: "
                                  "the trained rows are merged into the table"]


def test_saved_adapter_is_unchanged(tmp_path):
    patched, plain = _pair()
    inputs = _inputs()
    for model in (patched, plain):
        _loss_and_grads(model, inputs)
        with torch.no_grad():
            for param in model.parameters():
                if param.grad is not None:
                    param.sub_(param.grad)
    patched.save_pretrained(tmp_path / "patched")
    plain.save_pretrained(tmp_path / "plain")
    ours, reference = (load_file(tmp_path / name / "adapter_model.safetensors") for name in ("patched", "plain"))
    assert ours.keys() == reference.keys() and any("trainable_tokens_delta" in key for key in ours)
    for key, tensor in reference.items():
        assert_rel_close(ours[key], tensor, tol=1e-6, name=key)
    configs = [(tmp_path / name / "adapter_config.json").read_text() for name in ("patched", "plain")]
    assert configs[0] == configs[1]

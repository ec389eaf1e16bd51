"""fastft's prompt-masked loss equals transformers' own causal-LM loss, value and LoRA gradients."""
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import GemmaConfig, GemmaForCausalLM, LlamaConfig, LlamaForCausalLM

from fastft.patching.loss import prompt_masked_loss
from tests.kernels.numerics import assert_rel_close


def tiny(family: str):
    torch.manual_seed(0)
    common = dict(vocab_size=301, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    model = LlamaForCausalLM(LlamaConfig(**common)) if family == "llama" else GemmaForCausalLM(GemmaConfig(head_dim=12, **common))
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "down_proj"], task_type="CAUSAL_LM", init_lora_weights=False)
    return get_peft_model(model, lora)


def batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 301, (3, 23), generator=g)
    labels = ids.clone()
    labels[:, :15] = -100  # prompt
    labels[2, 19:] = -100  # padding of a shorter row
    mask = torch.ones_like(ids)
    mask[2, 19:] = 0
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def lora_grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("family", ["llama", "gemma"])
def test_loss_and_gradients_match_transformers(family):
    model = tiny(family)
    inputs = batch()
    ours = prompt_masked_loss(model, inputs)
    ours.backward()
    ours_grads = lora_grads(model)
    model.zero_grad()
    reference = model(**inputs).loss
    reference.backward()
    assert_rel_close(ours.detach(), reference.detach(), name="loss")
    for name, grad in lora_grads(model).items():
        assert_rel_close(ours_grads[name], grad, tol=1e-4, name=name)


def test_num_items_in_batch_normalises_over_the_accumulated_batch():
    model = tiny("llama")
    inputs = batch()
    labelled = int((inputs["labels"][:, 1:] != -100).sum())
    mean = prompt_masked_loss(model, inputs)
    summed_share = prompt_masked_loss(model, inputs, num_items_in_batch=torch.tensor(4 * labelled))
    assert_rel_close(summed_share.detach() * 4, mean.detach(), name="scaled")


def test_all_masked_batch_gives_zero_not_nan():
    model = tiny("llama")
    inputs = batch()
    inputs["labels"][:] = -100
    loss = prompt_masked_loss(model, inputs)
    loss.backward()
    assert loss.item() == 0.0

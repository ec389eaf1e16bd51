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


def tiny_gemma3_with_trained_tokens(trained_ids):
    """A tied Gemma 3 with LoRA and PEFT's trainable tokens on `trained_ids` (lora.train_tokens), whose trained rows
    are moved off their originals so that a head reading the base rows would give a different loss."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=301, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=12, final_logit_softcapping=30.0)
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "down_proj"],
                      task_type="CAUSAL_LM", init_lora_weights=False,
                      trainable_token_indices={"embed_tokens": trained_ids})
    model = get_peft_model(Gemma3ForCausalLM(config), lora)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "trainable_tokens_delta" in name:
                param.add_(torch.randn_like(param))
    return model


def test_trained_token_rows_go_to_the_loss_as_a_row_override(monkeypatch):
    """lora.train_tokens on a tied head: the loss reads the base head plus the trained rows (no PEFT head forward),
    and equals both PEFT's wrapped-head path and transformers' own loss, value and every gradient, to fp32 1e-5."""
    from fastft.patching import loss as loss_module

    trained = [7, 150, 3]
    model = tiny_gemma3_with_trained_tokens(trained)
    inputs = batch()
    inputs["labels"][:, 16::2] = torch.tensor(trained).repeat(4)[: inputs["labels"][:, 16::2].shape[1]]
    head = causal_lm_head(model)
    linear, (ids, rows) = loss_module.head_weights(head)
    assert type(linear) is torch.nn.Linear and ids.tolist() == trained and rows.requires_grad
    monkeypatch.setattr(head, "forward", lambda *_: pytest.fail("the wrapped head ran"))

    def loss_and_grads(compute):
        model.zero_grad()
        loss = compute()
        loss.backward()
        return loss.detach(), lora_grads(model)

    ours, ours_grads = loss_and_grads(lambda: prompt_masked_loss(model, inputs))
    monkeypatch.undo()
    monkeypatch.setattr(loss_module, "head_weights", lambda head: (None, None))
    wrapped, wrapped_grads = loss_and_grads(lambda: prompt_masked_loss(model, inputs))
    reference, reference_grads = loss_and_grads(lambda: model(**inputs).loss)
    assert any("trainable_tokens_delta" in name for name in ours_grads)
    for expected, expected_grads in ((wrapped, wrapped_grads), (reference, reference_grads)):
        assert_rel_close(ours, expected, name="loss")
        for name, grad in expected_grads.items():
            assert_rel_close(ours_grads[name], grad, name=name)


def causal_lm_head(model):
    return model.get_base_model().get_output_embeddings()

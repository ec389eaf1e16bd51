"""The prompt-masked causal-LM loss: the LM head runs only on positions that have a label.

On summarization data ~90% of positions are prompt; skipping them removes most of the LM head's cost
(the head is ~60% of Gemma 3 270M's parameters) and the full [batch, seq, vocab] logits never exist.
"""
import functools
import types

import torch
from torch import nn

from ..data.encode import IGNORE_INDEX
from ..kernels import cross_entropy, linear_cross_entropy


def causal_lm_of(model):
    """The transformers CausalLM inside a PEFT wrapper (LoRA layers already injected in it)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def labelled_hidden_states(model, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Final hidden states at positions whose next token is labelled, and those labels (already shifted)."""
    decoder = causal_lm_of(model).get_decoder()
    # position_ids keep packed examples apart (they restart per example); None for ordinary padded rows.
    hidden = decoder(
        input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"),
        position_ids=inputs.get("position_ids"), use_cache=False,
    ).last_hidden_state
    targets = inputs["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    return hidden[:, :-1][keep], targets[keep]


def prompt_masked_loss(model, inputs: dict, num_items_in_batch=None) -> torch.Tensor:
    """Sum of token losses over labelled positions / number of labelled tokens (of the whole accumulated batch
    when the trainer passes `num_items_in_batch`, so gradient accumulation matches one large batch)."""
    lm = causal_lm_of(model)
    rows, targets = labelled_hidden_states(model, inputs)
    softcap = getattr(lm.config.get_text_config(), "final_logit_softcapping", None)
    head = lm.get_output_embeddings()
    if type(head) is nn.Linear:
        total = linear_cross_entropy(rows, head.weight, targets, bias=head.bias, reduction="sum", softcap=softcap)
    else:  # a wrapped head (e.g. PEFT trainable tokens): still only the labelled rows
        total = cross_entropy(head(rows).float(), targets, reduction="sum", softcap=softcap)
    count = num_items_in_batch if num_items_in_batch is not None else targets.numel()
    return total / torch.as_tensor(count, device=total.device).clamp(min=1)


def add_masked_loss_forward(model) -> None:
    """Make `model(**inputs, masked_loss=True, num_items_in_batch=n)` return `prompt_masked_loss`; without the flag
    the forward is unchanged. The loss has to run inside the model's own forward call: DDP, FSDP and DeepSpeed wrap
    that call to synchronise gradients and gather parameters, and their wrappers hide the model's other methods."""
    plain = model.forward

    @functools.wraps(type(model).forward)  # keeps the signature that Trainer and generate inspect
    def forward(self, *args, masked_loss=False, **kwargs):
        if not masked_loss:
            return plain(*args, **kwargs)
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        return prompt_masked_loss(self, kwargs, num_items_in_batch)

    model.forward = types.MethodType(forward, model)

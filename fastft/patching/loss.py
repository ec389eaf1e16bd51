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
from ..runtime.heap import return_freed_pages


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


def head_weights(head) -> tuple[nn.Linear | None, tuple | None]:
    """(the plain nn.Linear the loss reads, row override or None) for a model's output embeddings, or (None, None)
    when the head must run its own forward. A tied head wrapped by PEFT's trainable tokens (lora.train_tokens) gives
    its base Linear and (token ids, trained rows): PEFT's forward would build a merged copy of the whole head and
    the labelled rows' full logits; linear_cross_entropy splices the trained rows in chunk by chunk instead."""
    if type(head) is nn.Linear:
        return head, None
    tokens = getattr(head, "token_adapter", None)  # peft.utils.other.TrainableTokensWrapper
    base = None if tokens is None else tokens.get_base_layer()
    if type(base) is not nn.Linear:
        return None, None
    if tokens.merged or tokens.disable_adapters:
        return base, None
    active = [name for name in tokens.active_adapters if name in tokens.token_indices]
    if len(active) > 1:  # several token adapters at once: PEFT's forward merges them
        return None, None
    if not active:
        return base, None
    ids = torch.tensor(tokens.token_indices[active[0]], device=base.weight.device)
    return base, (ids, tokens.trainable_tokens_delta[active[0]])


def prompt_masked_loss(model, inputs: dict, num_items_in_batch=None) -> torch.Tensor:
    """Sum of token losses over labelled positions / number of labelled tokens (of the whole accumulated batch
    when the trainer passes `num_items_in_batch`, so gradient accumulation matches one large batch)."""
    lm = causal_lm_of(model)
    rows, targets = labelled_hidden_states(model, inputs)
    softcap = getattr(lm.config.get_text_config(), "final_logit_softcapping", None)
    head = lm.get_output_embeddings()
    linear, override = head_weights(head)
    if rows.device.type == "cpu" and torch.is_grad_enabled():
        # The step's peak: every saved activation is alive and the head adds its logits. What the forward freed
        # lies in glibc's heap between live blocks; handing it back keeps the peak down. It costs the next step
        # faulting those pages in again: on Gemma 3 270M (fp32, 2 x 1,024 tokens, one-pass head) not trimming ran
        # ~4% faster but peaked 0.04-0.11 GiB higher, which the memory target could not spare.
        return_freed_pages()
    if linear is not None:
        total = linear_cross_entropy(rows, linear.weight, targets, bias=linear.bias, reduction="sum", softcap=softcap,
                                     row_override=override)
    else:  # another wrapped head: still only the labelled rows
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

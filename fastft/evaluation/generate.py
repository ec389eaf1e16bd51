"""Batched, left-padded generation from the same prompt code that built the training data."""
from pathlib import Path

import torch

from ..errors import FastftError
from ..models.adapters import load_with_adapter, read_adapter_config
from ..models.resolve import resolve_model


def load_for_inference(recipe, adapter: Path | None, notify=print):
    """(model, tokenizer): the base model, with the adapter (and the tokenizer saved beside it) when given."""
    from transformers import AutoTokenizer

    resolved = resolve_model(recipe, notify)
    recipe, tokenizer = resolved.recipe, resolved.tokenizer
    if adapter is not None:
        read_adapter_config(Path(adapter))  # a clear message for a folder that is not an adapter
        # carries the chat template and any added tokens; trust_remote_code given, so transformers never asks on stdin
        tokenizer = AutoTokenizer.from_pretrained(adapter, trust_remote_code=recipe.model.trust_remote_code)
    model = load_with_adapter(recipe.model, recipe.qlora, resolved.source, tokenizer, adapter)
    return model.eval(), tokenizer


def _left_pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt)
        mask[row, width - len(prompt):] = 1
    return ids, mask


def generation_prompts(encoder, examples) -> list[list[int]]:
    """The token ids each example's generation starts from: the training example's prompt part."""
    prompts = []
    for example in examples:
        fitted = encoder.prompt_ids(example)
        if fitted is None:
            raise FastftError(f"example {example.id}: the instruction and template alone exceed max_prompt_tokens",
                              hint="raise dataset.max_prompt_tokens")
        prompts.append(fitted[0])
    return prompts


def length_batches(prompts: list[list[int]], size: int) -> list[list[int]]:
    """Indices of `prompts` in batches of `size`, longest first: prompts of similar length share a batch, so little
    padding is computed, and the batch that needs the most memory runs first."""
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    return [order[start:start + size] for start in range(0, len(order), size)]


def generate_texts(model, tokenizer, encoder, examples, gen_cfg, progress_bar=None) -> list[str]:
    """One completion per example, in the examples' order, stopped at the template's end-of-turn token."""
    stop = [tokenizer.convert_tokens_to_ids(encoder.renderer.end_token), tokenizer.eos_token_id]
    prompts = generation_prompts(encoder, examples)
    batches = length_batches(prompts, gen_cfg.batch_size)
    outputs = [""] * len(prompts)
    for batch in progress_bar(batches, desc="Generating") if progress_bar else batches:
        ids, mask = _left_pad([prompts[i] for i in batch], tokenizer.pad_token_id)
        sample = gen_cfg.temperature > 0
        with torch.no_grad():
            out = model.generate(
                input_ids=ids.to(model.device), attention_mask=mask.to(model.device), max_new_tokens=gen_cfg.max_new_tokens,
                do_sample=sample, temperature=gen_cfg.temperature if sample else None, top_p=gen_cfg.top_p if sample else None,
                repetition_penalty=gen_cfg.repetition_penalty, no_repeat_ngram_size=gen_cfg.no_repeat_ngram_size,
                num_beams=gen_cfg.num_beams,
                eos_token_id=[t for t in stop if t is not None], pad_token_id=tokenizer.pad_token_id,
            )
        for i, row in zip(batch, out, strict=True):
            outputs[i] = tokenizer.decode(row[ids.shape[1]:], skip_special_tokens=True).strip()
    return outputs

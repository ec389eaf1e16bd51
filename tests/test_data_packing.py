"""Packing: the loss over packed rows equals the loss over the same examples padded one per row."""
import pytest
import torch
import torch.nn.functional as F

from fastft.config.schema import DatasetSection
from fastft.data.collator import PadCollator
from fastft.data.encode import IGNORE_INDEX
from fastft.data.packing import pack
from fastft.data.pipeline import build_splits
from tests.factories import REPO, tiny_bpe_tokenizer

SAMPLE = str(REPO / "data" / "ko_qa_sample" / "dev.jsonl")


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_bpe_tokenizer()


@pytest.fixture(scope="module")
def records(tokenizer):
    split, _ = build_splits(DatasetSection(task="qa", train=SAMPLE, max_prompt_tokens=256, max_answer_tokens=32), tokenizer, None)
    return list(split.dataset.select(range(8)))


def tiny_llama(tokenizer, attn):
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048)
    return AutoModelForCausalLM.from_config(config, attn_implementation=attn).eval()


def summed_loss(model, batch) -> tuple[torch.Tensor, int]:
    """Sum of next-token losses over labelled targets, computed from the model's logits (independent of fastft's loss)."""
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
    with torch.no_grad():  # no KV cache, as in training: transformers looks for packed rows only without one
        logits = model(**inputs, use_cache=False).logits[:, :-1].float()
    targets = batch["labels"][:, 1:]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")
    return loss, int((targets != IGNORE_INDEX).sum())


def test_pack_keeps_every_token_and_restarts_positions(records):
    rows = pack(records, 600)
    assert 1 < len(rows) < len(records)
    assert sum(len(r["input_ids"]) for r in rows) == sum(len(r["input_ids"]) for r in records)
    assert all(len(r["input_ids"]) <= 600 for r in rows)
    starts = [i for row in rows for i, p in enumerate(row["position_ids"]) if p == 0]
    assert len(starts) == len(records)
    assert "+".join(r["example_id"] for r in records) == "+".join(r["example_id"] for r in rows)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_loss_equals_unpacked_loss(tokenizer, records, attn):
    model = tiny_llama(tokenizer, attn)
    collate = PadCollator(tokenizer.convert_tokens_to_ids("<|finetune_right_pad_id|>"))
    unpacked, n_unpacked = summed_loss(model, collate(records))
    packed_batch = collate(pack(records, 600))
    assert "attention_mask" not in packed_batch and packed_batch["input_ids"].shape[0] < len(records)
    packed, n_packed = summed_loss(model, packed_batch)
    assert n_packed == n_unpacked
    torch.testing.assert_close(packed / n_packed, unpacked / n_unpacked, rtol=1e-5, atol=1e-5)


def test_fastft_loss_on_packed_rows_equals_unpacked(tokenizer, records):
    from fastft.patching.loss import prompt_masked_loss

    model = tiny_llama(tokenizer, "sdpa")
    collate = PadCollator(tokenizer.convert_tokens_to_ids("<|finetune_right_pad_id|>"))
    with torch.no_grad():
        unpacked = prompt_masked_loss(model, collate(records))
        packed = prompt_masked_loss(model, collate(pack(records, 600)))
    torch.testing.assert_close(packed, unpacked, rtol=1e-5, atol=1e-5)

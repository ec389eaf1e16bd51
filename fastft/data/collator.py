"""Pad a batch on the right: pad_token_id in input_ids, -100 in labels, 0 in the attention mask.

Packed rows (with position_ids) get no attention mask: transformers separates their examples by the position
ids instead (see packing.py). Their padding continues as one more short sequence that nothing attends to.
"""
import torch

from .encode import IGNORE_INDEX


class PadCollator:
    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None, with_ids: bool = False):
        """with_ids adds `example_ids` (a list of str) so a failing batch can be named; FastftTrainer removes it."""
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of
        self.with_ids = with_ids

    def __call__(self, features: list[dict]) -> dict:
        longest = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            longest = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        packed = "position_ids" in features[0]
        batch = {
            "input_ids": torch.full((len(features), longest), self.pad_token_id, dtype=torch.long),
            "labels": torch.full((len(features), longest), IGNORE_INDEX, dtype=torch.long),
        }
        key = "position_ids" if packed else "attention_mask"
        batch[key] = torch.zeros((len(features), longest), dtype=torch.long)
        for row, feature in enumerate(features):
            n = len(feature["input_ids"])
            batch["input_ids"][row, :n] = torch.tensor(feature["input_ids"])
            batch["labels"][row, :n] = torch.tensor(feature["labels"])
            if packed:
                batch["position_ids"][row, :n] = torch.tensor(feature["position_ids"])
                batch["position_ids"][row, n:] = torch.arange(longest - n)
            else:
                batch["attention_mask"][row, :n] = 1
        if self.with_ids:
            batch["example_ids"] = [str(f.get("example_id", "?")) for f in features]
        return batch

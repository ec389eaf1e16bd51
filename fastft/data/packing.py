"""Packing: several short encoded examples per row, kept apart by their position ids.

Position ids restart at 0 for each example and the collator leaves the attention mask out; transformers then
builds a block-diagonal causal mask from the position ids (masking_utils.find_packed_sequence_indices), so no
example attends to another and each sees the positions it would see alone. That detection runs only when the
forward pass has no KV cache (use_cache=False, as in training) and receives the position ids. The loss over the packed rows is
therefore the loss over the same examples unpacked (tests/test_data_packing.py checks it).
"""
from .encode import IGNORE_INDEX


def pack(records: list[dict], max_length: int) -> list[dict]:
    """Greedy, in order: each example joins the current row while the row stays within `max_length` tokens."""
    rows: list[dict] = []
    for record in records:
        if not rows or len(rows[-1]["input_ids"]) + len(record["input_ids"]) > max_length:
            rows.append({"input_ids": [], "labels": [], "position_ids": [], "example_id": []})
        row = rows[-1]
        row["input_ids"] += record["input_ids"]
        # An example's first token is predicted from the previous example's last one: never a target.
        row["labels"] += [IGNORE_INDEX] + record["labels"][1:]
        row["position_ids"] += list(range(len(record["input_ids"])))
        row["example_id"].append(record["example_id"])
    for row in rows:
        row["example_id"] = "+".join(row["example_id"])
    return rows

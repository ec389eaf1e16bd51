"""Peak extra memory of one training step with lora.train_tokens: the trained rows as linear_cross_entropy's row
override and fastft.kernels.embedding's, against PEFT's wrapped LM head and embedding, and a run without them.

    python bench/train_tokens_memory.py [--layers 1] [--seq 1024] [--batch 2]

A Gemma 3 270M-shaped model (its config: tied 262,144 x 640 head) with `--layers` decoder layers, random weights,
LoRA r=16 on the seven projections, fastft's kernels, trainable tokens on <end_of_turn> (id 106, read and a
target), 10% of the positions labelled (the benchmark's summarization rows are ~90% prompt). One forward +
backward of fastft's prompt-masked loss; bench.memtrack counts every tensor allocated in it that is alive at once
(deterministic: not RSS, which the allocator and BLAS pad). Writes train-tokens-memory.md and .json under
bench/results/<device>-<date>/.
"""
import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root in place of this folder, whose kernels.py
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # would shadow the `kernels` transformers imports

import torch  # noqa: E402

from bench.layer_model import gemma3_config, lora_config  # noqa: E402
from bench.machine import results_dir  # noqa: E402
from bench.memtrack import peak_extra_bytes  # noqa: E402

END_OF_TURN = 106  # Gemma 3's <end_of_turn>, the default recipe's lora.train_tokens
LABELLED = 0.1
# name -> (trained tokens?, LM head, input embedding)
VARIANTS = {
    "no trained tokens": (False, "plain", "plain"),
    "train_tokens, row override in head and embedding (fastft now)": (True, "override", "override"),
    "train_tokens, row override in head, PEFT's embedding (before)": (True, "override", "peft"),
    "train_tokens, PEFT's wrapped head and embedding (before that)": (True, "peft", "peft"),
}


def build(layers: int, trained: bool, peft_embedding: bool):
    from peft import get_peft_model
    from transformers import Gemma3ForCausalLM

    from fastft.patching import apply_kernels
    from fastft.patching.loss import add_masked_loss_forward

    torch.manual_seed(0)
    model = Gemma3ForCausalLM(gemma3_config(layers))
    extra = {"trainable_token_indices": {"embed_tokens": [END_OF_TURN]}} if trained else {}
    model = get_peft_model(model, lora_config(**extra))
    apply_kernels(model)
    if peft_embedding:  # PEFT's own forward: a merged copy of the whole table per step, as fastft ran before
        for module in model.modules():
            if type(module).__name__ == "TrainableTokensLayer":
                vars(module).pop("forward", None)
    add_masked_loss_forward(model)
    return model.train()


def batch(n_vocab: int, batch_size: int, seq: int) -> dict:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, n_vocab, (batch_size, seq), generator=gen)
    ids[:, -8::2] = END_OF_TURN  # the trained row is read and a target, as <end_of_turn> closes every answer
    labels = ids.clone()
    labels[:, : seq - int(seq * LABELLED)] = -100
    return {"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids)}


def measure(variant: tuple, layers: int, batch_size: int, seq: int) -> dict:
    from fastft.patching import loss

    trained, head, embedding = variant
    model = build(layers, trained, peft_embedding=embedding == "peft")
    inputs = batch(model.config.vocab_size, batch_size, seq)
    real = loss.head_weights
    if head == "peft":  # the loss runs the wrapped head's own forward, as fastft did before the row override
        loss.head_weights = lambda head: (None, None) if type(head) is not torch.nn.Linear else real(head)
    try:
        peak = peak_extra_bytes(lambda: model(**inputs, masked_loss=True).backward(), "cpu")
    finally:
        loss.head_weights = real
    return {"peak_extra_bytes": peak, "peak_extra_gib": peak / 2**30}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    rows = []
    for name, variant in VARIANTS.items():
        result = measure(variant, args.layers, args.batch, args.seq)
        rows.append({"variant": name, **result})
        print(f"{name}: {result['peak_extra_gib']:.3f} GiB", flush=True)
    out = results_dir()
    out.mkdir(parents=True, exist_ok=True)
    settings = {"model": "Gemma 3 270M config", "layers": args.layers, "batch": args.batch, "seq": args.seq,
                "labelled_fraction": LABELLED, "trained_token_ids": [END_OF_TURN], "dtype": "float32",
                "torch": torch.__version__}
    (out / "train-tokens-memory.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=1) + "\n")
    lines = ["# Peak extra memory of one training step with lora.train_tokens", "",
             f"Gemma 3 270M config with {args.layers} decoder layer(s), fp32, batch {args.batch} x seq {args.seq}, "
             f"{LABELLED:.0%} of positions labelled, LoRA r=16 on 7 projections, fastft kernels, trained row "
             f"<end_of_turn> ({END_OF_TURN}). Bytes of tensors allocated in one forward + backward and alive at "
             "once (bench/memtrack.py), `python bench/train_tokens_memory.py`.", "",
             "| variant | peak extra (GiB) |", "|---|---|"]
    lines += [f"| {row['variant']} | {row['peak_extra_gib']:.3f} |" for row in rows]
    (out / "train-tokens-memory.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'train-tokens-memory.md'}")


if __name__ == "__main__":
    main()

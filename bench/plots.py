"""PNG plots: tokens/s and peak memory against sequence length, one line per system."""
from collections import defaultdict
from pathlib import Path

from .config import checkpointing_label

GB = 1024**3
_SERIES_KEY = ("model", "workload", "batch", "quant", "dtype", "gradient_checkpointing")


def _sweep(rows: list[dict]) -> tuple[tuple, list[dict]]:
    """The measured rows of the setting with the most sequence lengths (the seq-len sweep when it ran)."""
    groups = defaultdict(list)
    for row in rows:
        if not row["skipped_reason"]:
            groups[tuple(row[k] for k in _SERIES_KEY) + (round(row["masked_frac"], 2),)].append(row)
    if not groups:
        return (), []
    return max(groups.items(), key=lambda item: len({r["seq_len"] for r in item[1]}))


def plot_vs_seq_len(rows: list[dict], out_dir: Path, stem: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key, chosen = _sweep(rows)
    if not chosen:
        return []
    model, workload, batch, quant, dtype, checkpointing, masked = key
    title = (f"{model}, {workload} ({masked:.0%} masked), batch {batch}, {'QLoRA nf4' if quant == 'nf4' else 'LoRA'}, "
             f"{dtype}, grad. ckpt {checkpointing_label(checkpointing)}")
    lengths = sorted({r["seq_len"] for r in chosen})
    paths = []
    panels = (("tokens_per_s", "tokens/s", 1, "throughput"), ("peak_mem_bytes", "peak memory (GiB)", GB, "memory"))
    for field, label, scale, name in panels:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for system in sorted({r["system"] for r in chosen}):
            points = sorted((r["seq_len"], r[field] / scale) for r in chosen if r["system"] == system)
            ax.plot(*zip(*points), marker="o", label=system)
        ax.set(xscale="log", xlabel="sequence length (tokens)", ylabel=label)
        ax.set_title(title, fontsize=9)
        ax.set_xticks(lengths, labels=[str(n) for n in lengths])
        ax.minorticks_off()
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        paths.append(out_dir / f"{stem}-{name}-vs-seq-len.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths

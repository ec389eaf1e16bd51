"""The Markdown report: machine, settings, the issue's targets (hit or missed, from the rows), and every row."""
from .config import checkpointing_label, default_dtype
from .plan import CHECKPOINTING, PAIR
from .targets import failure, target_row, verdicts

GB = 1024**3


def target_lines(rows) -> list[str]:
    lines = ["| target | grad. ckpt | measured | verdict |", "|---|---|---|---|"]
    for target, value, text in verdicts(rows):
        measured = "-" if value is None else format(value, ".3g")
        lines.append(f"| {target.text} | {checkpointing_label(target.checkpointing)} | {measured} | {text} |")
    fast = target_row(rows, "fastft", False)
    if fast and fast["useful_mfu"]:  # tokens/s over useful MFU = the tokens/s the useful FLOPs allow at the peak
        bound = fast["tokens_per_s"] / fast["useful_mfu"]
        lines += ["", f"At the peak measured beside its steps, this configuration's useful FLOPs allow {bound:.0f} "
                      f"tokens/s; fastft reaches {fast['useful_mfu']:.0%} of that (its useful MFU; "
                      f"{fast['useful_mfu_run']:.0%} of the run's best peak)."]
    return lines


def _fmt(value, spec=".3g", scale=1.0) -> str:
    return "-" if value is None else format(value / scale, spec)


def row_line(r: dict) -> str:
    failed = failure(r)
    note = (f"skipped: {r['skipped_reason']}" if r["skipped_reason"]
            else f"FAILED, trained nothing: {failed}; {r['kernels']}" if failed else r["kernels"])
    cells = [r["system"], r["workload"], r["model"], r["seq_len"], r["batch"], r["quant"], r["dtype"],
             checkpointing_label(r["gradient_checkpointing"]), _fmt(r["masked_frac"], ".2f"),
             _fmt(r["tokens_per_s"], ".1f"), _fmt(r["trained_tokens_per_s"], ".1f"), _fmt(r["step_s"], ".2f"),
             _fmt(r["peak_mem_bytes"], ".2f", GB), _fmt(r.get("peak_flops_beside"), ".1f", 1e9), _fmt(r["useful_mfu"], ".1%"),
             _fmt(r.get("useful_mfu_run"), ".1%"), _fmt(r.get("first_loss"), ".5f"),
             _fmt(r["final_loss"], ".5f"), _fmt(r["grad_norm"], ".4g"), note.replace("|", "/")]
    return "| " + " | ".join(map(str, cells)) + " |"


_POINT = ("model", "workload", "seq_len", "batch", "quant", "dtype", "gradient_checkpointing")


def side_by_side_lines(rows: list[dict]) -> list[str]:
    """fastft against hf-peft-trl at every point where both trained: the sequence-length sweep, checkpointing on
    and off, the bf16 rows."""
    pairs = {}
    for r in rows:
        if r["system"] in ("fastft", "hf-peft-trl") and not r["skipped_reason"] and not failure(r):
            pairs.setdefault(tuple(r[k] for k in _POINT) + (round(r["masked_frac"], 2),), {})[r["system"]] = r
    lines = ["| model | seq | batch | quant | dtype | grad. ckpt | masked | fastft tokens/s | hf-peft-trl tokens/s "
             "| speed ratio | fastft GiB | hf-peft-trl GiB | memory ratio | loss rel. diff. |", "|" + "---|" * 14]
    for key, pair in pairs.items():
        if len(pair) < 2:
            continue
        fast, base = pair["fastft"], pair["hf-peft-trl"]
        model, _, seq, batch, quant, dtype, checkpointing, masked = key
        loss = abs(fast["final_loss"] - base["final_loss"]) / abs(base["final_loss"])
        cells = [model, seq, batch, quant, dtype, checkpointing_label(checkpointing), f"{masked:.2f}",
                 f"{fast['tokens_per_s']:.1f}", f"{base['tokens_per_s']:.1f}",
                 f"{fast['tokens_per_s'] / base['tokens_per_s']:.2f}x", f"{fast['peak_mem_bytes'] / GB:.2f}",
                 f"{base['peak_mem_bytes'] / GB:.2f}", f"{fast['peak_mem_bytes'] / base['peak_mem_bytes']:.3f}x",
                 f"{loss:.2g}"]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return lines if len(lines) > 2 else ["(no point where both fastft and hf-peft-trl trained)"]


def checkpointing_lines(rows: list[dict]) -> list[str]:
    """At the target: each system of the pair with gradient checkpointing off, selective and on, its tokens/s and
    peak memory, and both relative to the same system with checkpointing off."""
    lines = ["| system | grad. ckpt | tokens/s | peak GiB | tokens/s vs off | peak memory vs off |", "|" + "---|" * 6]
    for system in PAIR:
        off = target_row(rows, system, False)
        for setting in CHECKPOINTING["all"]:
            row = target_row(rows, system, setting)
            if row is None:
                continue
            if row["skipped_reason"] or failure(row):
                why = f"skipped: {row['skipped_reason']}" if row["skipped_reason"] else f"FAILED: {failure(row)}"
                lines.append(f"| {system} | {checkpointing_label(setting)} | {why.replace('|', '/')} | - | - | - |")
                continue
            usable = off is not None and not off["skipped_reason"] and not failure(off)
            cells = [system, checkpointing_label(setting), f"{row['tokens_per_s']:.1f}",
                     f"{row['peak_mem_bytes'] / GB:.2f}",
                     f"{row['tokens_per_s'] / off['tokens_per_s']:.2f}x" if usable else "-",
                     f"{row['peak_mem_bytes'] / off['peak_mem_bytes']:.3f}x" if usable else "-"]
            lines.append("| " + " | ".join(cells) + " |")
    return lines if len(lines) > 2 else ["(no target row measured)"]


def settings_lines(rows: list[dict]) -> list[str]:
    """The settings read back from each trainer, per dtype and checkpointing setting: identical across systems?"""
    groups = {}
    for r in rows:
        if not r["skipped_reason"]:
            groups.setdefault((r["dtype"], r["gradient_checkpointing"]), set()).add(r["settings"])
    lines = []
    for (dtype, checkpointing), settings in groups.items():
        head = f"- Settings, {dtype}, gradient checkpointing {checkpointing_label(checkpointing)}, "
        if len(settings) == 1:
            lines.append(head + f"identical across systems (read back from each trainer): {next(iter(settings))}")
        else:
            lines.append(head + "NOT identical across systems: " + " / ".join(sorted(settings)))
    return lines


def peak_text(meta: dict) -> str:
    return "; ".join(f"{dtype} {flops / 1e9:.1f} GFLOP/s (before: {meta['peak_before'][dtype] / 1e9:.1f}, "
                     f"after: {meta['peak_after'][dtype] / 1e9:.1f})" for dtype, flops in meta["peak_flops"].items())


def markdown(rows: list[dict], meta: dict) -> str:
    out = [f"# fastft throughput: {meta['device_name']}, {meta['date']}", "",
           f"- Machine: {meta['machine']}",
           f"- Software: {meta['software']}",
           f"- Run: `{meta['command']}` ({meta['mode']}); each configuration in a fresh process; "
           f"step time = median of the timed steps after warm-up; the same token batches for every system",
           *settings_lines(rows),
           f"- Peak for useful MFU: the best {meta['peak_what']} in the row's dtype, measured in the row's own process "
           "right after its timed steps (peak GFLOP/s beside: the machine's speed when the row ran); the run's peak, "
           f"measured before and after all rows (MFU vs run's peak): {peak_text(meta)}",
           "- Useful MFU: the FLOPs the result needs (LM head on labelled positions only, frozen weights without "
           "weight gradients; bench/flops.py) per second, over the peak. Grad norm: L2 norm of the "
           "trainable parameters' gradients at the last timed step; a row whose grad norm is 0 or whose loss on "
           "batch 0 did not move (loss before -> final loss) is FAILED and wins nothing. Peak memory: "
           + meta["memory_what"], "",
           "## Targets (fastft vs hf-peft-trl; Gemma 3 270M, summarization ~90% masked, seq 1024, batch 2, LoRA, "
           f"{default_dtype(rows[0]['device']) if rows else '-'})", ""]
    if meta.get("warning"):
        out += [f"**{meta['warning']}**", ""]
    out += target_lines(rows)
    out += ["", "Not covered by these rows: `linear_cross_entropy` memory flat in N at V = 262,144 (run "
            "`python bench/kernels.py`, its report sits beside this one); the GPU target (ahead of unsloth and liger "
            "on Llama-3.2-3B QLoRA) needs a GPU run of this harness."]
    out += ["", "## fastft vs hf-peft-trl, side by side", "", *side_by_side_lines(rows)]
    out += ["", "## Gradient checkpointing at the target: off, selective (fastft only: its fused MLP recomputes gate "
            "and up) and on", "", *checkpointing_lines(rows)]
    out += ["", "## All rows", "",
            "| system | workload | model | seq | batch | quant | dtype | grad. ckpt | masked | tokens/s | trained tok/s"
            " | step s | peak GiB | peak GFLOP/s beside | useful MFU | MFU vs run's peak | loss before | final loss"
            " | grad norm | kernels / skipped / FAILED |",
            "|" + "---|" * 20]
    out += [row_line(r) for r in rows]
    return "\n".join(out) + "\n"

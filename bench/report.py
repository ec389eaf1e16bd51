"""The Markdown report: machine, settings, the issue's targets (hit or missed, from the rows), and every row."""
from .plan import TARGET

GB = 1024**3
# (the target, its quantity from the fastft and hf-peft-trl rows, bound, True when higher is better)
TARGETS = (
    ("fastft >= 2.5x hf-peft-trl tokens/s", lambda f, h: f["tokens_per_s"] / h["tokens_per_s"], 2.5, True),
    ("fastft <= 0.5x hf-peft-trl peak memory", lambda f, h: f["peak_mem_bytes"] / h["peak_mem_bytes"], 0.5, False),
    ("same loss after the timed steps: relative difference <= 1e-3",
     lambda f, h: abs(f["final_loss"] - h["final_loss"]) / abs(h["final_loss"]), 1e-3, False),
)


def is_target(row: dict) -> bool:
    return (all(row[k] == v for k, v in TARGET.items()) and abs(row["masked_frac"] - 0.9) < 0.01
            and not row["gradient_checkpointing"])


def _target_row(rows, system):
    return next((r for r in rows if r["system"] == system and is_target(r)), None)


def target_lines(rows) -> list[str]:
    fast, base = _target_row(rows, "fastft"), _target_row(rows, "hf-peft-trl")
    lines = ["| target | measured | verdict |", "|---|---|---|"]
    for text, quantity, bound, higher in TARGETS:
        if not fast or not base or fast["skipped_reason"] or base["skipped_reason"]:
            lines.append(f"| {text} | not measured in this run | - |")
            continue
        value = quantity(fast, base)
        hit = value >= bound if higher else value <= bound
        lines.append(f"| {text} | {value:.3g} | {'HIT' if hit else 'MISSED'} |")
    if fast and fast["useful_mfu"]:  # tokens/s over useful MFU = the tokens/s the useful FLOPs allow at the peak
        bound = fast["tokens_per_s"] / fast["useful_mfu"]
        lines += ["", f"At the measured peak, this configuration's useful FLOPs allow {bound:.0f} tokens/s; "
                      f"fastft reaches {fast['useful_mfu']:.0%} of that (its useful MFU)."]
    return lines


def _fmt(value, spec=".3g", scale=1.0) -> str:
    return "-" if value is None else format(value / scale, spec)


def row_line(r: dict) -> str:
    note = f"skipped: {r['skipped_reason']}" if r["skipped_reason"] else r.get("kernels", "")
    cells = [r["system"], r["workload"], r["model"], r["seq_len"], r["batch"], r["quant"],
             _fmt(r["masked_frac"], ".2f"),
             _fmt(r["tokens_per_s"], ".1f"), _fmt(r["trained_tokens_per_s"], ".1f"), _fmt(r["step_s"], ".2f"),
             _fmt(r["peak_mem_bytes"], ".2f", GB), _fmt(r["mfu"], ".1%"), _fmt(r["useful_mfu"], ".1%"),
             _fmt(r["final_loss"], ".5f"), note.replace("|", "/")]
    return "| " + " | ".join(map(str, cells)) + " |"


def settings_text(rows: list[dict]) -> str:
    settings = sorted({r["settings"] for r in rows if not r["skipped_reason"]})
    if len(settings) == 1:
        return f"(identical across systems, read back from each trainer): {settings[0]}"
    return "NOT identical across rows: " + " / ".join(settings) if settings else "-"


def markdown(rows: list[dict], meta: dict) -> str:
    out = [f"# fastft throughput: {meta['device_name']}, {meta['date']}", "",
           f"- Machine: {meta['machine']}",
           f"- Software: {meta['software']}",
           f"- Run: `{meta['command']}` ({meta['mode']}); each configuration in a fresh process; "
           f"step time = median of the timed steps after warm-up",
           f"- Settings {settings_text(rows)}; {meta['dtype']}; the same token batches for every system",
           f"- Peak for MFU: {meta['peak_flops'] / 1e9:.1f} GFLOP/s, the best {meta['peak_what']} measured in this run "
           f"(before: {meta['peak_before'] / 1e9:.1f}, after: {meta['peak_after'] / 1e9:.1f})",
           "- MFU counts model FLOPs with the LM head on every position; useful MFU counts it on labelled positions "
           "only (see bench/flops.py). Peak memory: " + meta["memory_what"], "",
           "## Targets (fastft vs hf-peft-trl; Gemma 3 270M, summarization ~90% masked, seq 1024, batch 2, LoRA)", ""]
    if meta.get("warning"):
        out += [f"**{meta['warning']}**", ""]
    out += target_lines(rows)
    out += ["", "Not covered by these rows: `linear_cross_entropy` memory flat in N at V = 262,144 (run "
            "`python bench/kernels.py`, its report sits beside this one); the GPU target (ahead of unsloth and liger "
            "on Llama-3.2-3B QLoRA) needs a GPU run of this harness."]
    out += ["", "## All rows", "",
            "| system | workload | model | seq | batch | quant | masked | tokens/s | trained tok/s | step s | peak GiB "
            "| MFU | useful MFU | final loss | kernels / skipped |",
            "|" + "---|" * 15]
    out += [row_line(r) for r in rows]
    return "\n".join(out) + "\n"

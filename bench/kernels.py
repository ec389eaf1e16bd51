"""Each fastft kernel against the op it replaces: forward+backward time and peak extra memory over shape sweeps.

    python bench/kernels.py [--quick] [--json PATH]

On a GPU the Triton kernels run; on CPU fastft.kernels runs its PyTorch path of the same algorithm, and the
report says so. Results go to bench/results/<device>-<date>/kernels[-quick].{json,md}.
"""
import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root in place of this folder, whose kernels.py
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # would shadow the `kernels` transformers imports

import torch  # noqa: E402

from bench import (
    kernel_cases as kc,  # noqa: E402
)
from bench import (
    machine,  # noqa: E402
)
from bench.config import device, dtype_name  # noqa: E402
from bench.measure import sync  # noqa: E402
from bench.memtrack import peak_extra_bytes  # noqa: E402
from fastft.kernels.cross_entropy import CHUNK_ELEMENTS  # noqa: E402

MIB = 1024**2
GEMMA = {"hidden": 640, "inter": 2048, "heads": 4, "kv_heads": 1, "head_dim": 256, "vocab": 262_144}


def cases(quick: bool, env):
    """Gemma 3 270M's shapes at 2,048 tokens; the full sweep adds Llama-3-8B-like shapes and more N."""
    g, t = GEMMA, 2048
    yield from kc.norm_cases(t, g["hidden"], env)
    yield from kc.activation_cases(t, g["inter"], env)
    yield from kc.rope_cases(t, g["heads"], g["kv_heads"], g["head_dim"], env)
    yield from kc.lora_cases(t, g["hidden"], g["inter"], 16, env)
    yield from kc.ce_cases(512, g["vocab"], env)
    yield from kc.lce_cases((256, 1024, 2048) if quick else (256, 1024, 4096, 16384), g["hidden"], g["vocab"], env)
    if not quick:
        yield from kc.norm_cases(8192, 4096, env)
        yield from kc.activation_cases(8192, 14336, env)
        yield from kc.rope_cases(8192, 32, 8, 128, env)
        yield from kc.lora_cases(8192, 4096, 14336, 16, env)
        yield from kc.ce_cases(2048, 128_256, env)


def _fwd_bwd(fn, inputs, grads) -> None:
    for tensor in inputs.values():
        tensor.grad = None
    torch.autograd.backward(fn(inputs), grads)


def _seconds(fn, inputs, grads, dev: str, budget_s: float, max_repeats: int) -> float:
    """Median forward+backward time; the first call warms up, later calls stop once the budget is spent."""
    times = []
    while len(times) < 2 or (len(times) <= max_repeats and sum(times) < budget_s):
        sync(dev)
        start = time.perf_counter()
        _fwd_bwd(fn, inputs, grads)
        sync(dev)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def _backend(inputs: dict, dev: str) -> str:
    from fastft.kernels._backend import interpreting, use_triton

    if use_triton(*inputs.values()):
        return "triton (interpreter)" if interpreting() else "triton"
    return f"pytorch path ({dev})"


def measure(case, dev: str, reference_budget: int, quick: bool) -> dict:
    inputs = case.make()
    with torch.no_grad():
        ours = case.fastft(inputs)
    grads = [torch.randn_like(o) if o.dim() else torch.ones_like(o) for o in ours]
    budget, repeats = (3.0, 3) if quick else (10.0, 10)
    row = {"kernel": case.kernel, "replaces": case.replaces, "shape": case.shape, "device": dev,
           "backend": _backend(inputs, dev), "fastft_s": _seconds(case.fastft, inputs, grads, dev, budget, repeats),
           "fastft_extra_bytes": peak_extra_bytes(lambda: _fwd_bwd(case.fastft, inputs, grads), dev),
           "reference_s": None, "reference_extra_bytes": None, "max_abs_diff": None, "note": ""}
    if case.reference_bytes > reference_budget:
        row["note"] = f"reference not run: needs ~{case.reference_bytes / 1024**3:.1f} GiB (see --reference-mem-gb)"
        return row
    with torch.no_grad():
        diffs = [(a.float() - b.float()).abs().max().item() for a, b in zip(ours, case.reference(inputs))]
    row["max_abs_diff"] = max(diffs)
    row["reference_s"] = _seconds(case.reference, inputs, grads, dev, budget, repeats)
    row["reference_extra_bytes"] = peak_extra_bytes(lambda: _fwd_bwd(case.reference, inputs, grads), dev)
    return row


def _cell(value, scale=1.0, spec=".1f") -> str:
    return "-" if value is None else format(value / scale, spec)


def markdown(rows: list[dict], title: str) -> str:
    out = [f"# {title}", "", "| kernel | replaces | shape | backend | fastft ms | reference ms | speed-up "
           "| fastft extra MiB | reference extra MiB | max abs diff | note |", "|" + "---|" * 11]
    for r in rows:
        speedup = r["reference_s"] / r["fastft_s"] if r["reference_s"] else None
        cells = [r["kernel"], r["replaces"], r["shape"], r["backend"], _cell(r["fastft_s"], 1e-3),
                 _cell(r["reference_s"], 1e-3), _cell(speedup, 1, ".2f"), _cell(r["fastft_extra_bytes"], MIB),
                 _cell(r["reference_extra_bytes"], MIB), _cell(r["max_abs_diff"], 1, ".2e"), r["note"]]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out + ["", *lce_summary(rows)]) + "\n"


def lce_summary(rows: list[dict]) -> list[str]:
    """linear_cross_entropy's extra memory at each N for V = 262,144, beside one fp32 copy of the full logits."""
    vocab = GEMMA["vocab"]
    lce = [r for r in rows if r["kernel"] == "linear_cross_entropy" and r["shape"].endswith(f"V={vocab}")]
    if not lce:
        return []
    points = ", ".join(f"{r['shape'].split(',')[0]}: {r['fastft_extra_bytes'] / MIB:.0f} MiB" for r in lce)
    largest = int(lce[-1]["shape"].split(",")[0][2:])
    return [f"linear_cross_entropy extra memory at V = {vocab:,} (chunks of {CHUNK_ELEMENTS // vocab} rows): {points}. "
            f"One fp32 copy of the full logits at N={largest} would be {largest * vocab * 4 / MIB:,.0f} MiB."]


def _progress(r: dict) -> str:
    def part(who, seconds, extra):
        return f"{who} {seconds * 1e3:9.1f} ms {extra / MIB:8.1f} MiB"

    text = f"{r['kernel']:24} {r['shape']:34} " + part("fastft", r["fastft_s"], r["fastft_extra_bytes"])
    return text + (" | " + part("reference", r["reference_s"], r["reference_extra_bytes"]) if r["reference_s"] else "")


def write(rows: list[dict], out: Path, stem: str, json_path: Path | None, warning: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    title = f"fastft kernels vs the ops they replace: {machine.device_name()}, {dtype_name()}, {datetime.date.today()}"
    meta = {"machine": machine.machine_text(), "software": machine.software_text(), "warning": warning}
    (out / f"{stem}.json").write_text(json.dumps({**meta, "rows": rows}, indent=1), encoding="utf-8")
    footer = f"\nMachine: {meta['machine']}. {meta['software']}.\n" + (f"\n**{warning}**\n" if warning else "")
    (out / f"{stem}.md").write_text(markdown(rows, title) + footer, encoding="utf-8")
    if json_path:
        json_path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    print(f"wrote {out / stem}.json and .md")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Gemma 3 270M shapes only, fewer repeats")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument("--out", type=Path, help="output folder (default bench/results/<device>-<date>)")
    parser.add_argument("--reference-mem-gb", type=float, default=machine.total_memory_bytes() * 0.3 / 1024**3,
                        help="skip a reference op whose estimated peak is above this (default 30%% of RAM)")
    args = parser.parse_args(argv)
    dev, rows, load = device(), [], os.getloadavg()[0]
    for case in cases(args.quick, (dev, getattr(torch, dtype_name()))):
        rows.append(measure(case, dev, int(args.reference_mem_gb * 1024**3), args.quick))
        print(_progress(rows[-1]), flush=True)
    warning = machine.busy_warning(load)
    write(rows, args.out or machine.results_dir(), "kernels-quick" if args.quick else "kernels", args.json, warning)


if __name__ == "__main__":
    main()

"""Check fastft on this GPU in one command: its kernels against PyTorch, then training throughput against the others.

    python bench/gpu_check.py [--json PATH] [--skip-throughput] [--systems fastft,hf-peft-trl,liger,unsloth]

1. kernels: every fastft kernel, forward and backward at bf16 on Llama-3.2-3B shapes (2,048 tokens; hidden 3,072,
   intermediate 8,192, 24 query / 8 key-value heads of 128, vocab 128,256; LoRA r=16 and r=256) and at Gemma 3's
   vocabulary (262,144), against the op it replaces run on fp32 copies of the same inputs (bench/kernel_cases.py).
   Every output and input gradient must be within the bf16 tolerance of the test suite (tests/kernels/numerics.py)
   in relative error ||ours - ref|| / ||ref||. A kernel that fails to launch (e.g. OutOfResources) fails its row.
2. cross-entropy writing its gradient over the logits (the in-place mode linear_cross_entropy uses) against
   writing it to a separate buffer, 10,000 rows at V = 262,144 (three 5.2 GB bf16 buffers): the same kernel on the
   same data must give identical losses and gradients; a difference means the in-place sweep read a value
   another warp had already overwritten.
3. bench/throughput.py --sweeps quant on a Llama-3.2-3B-shaped model with random weights (built once under
   fastft's cache, no download; building it needs ~20 GB of host RAM): LoRA and QLoRA (nf4), fastft against
   hf-peft-trl, liger and unsloth (each skipped, with the reason, when its package is missing).

Prints one table and writes JSON (default bench/results/<device>-<date>/gpu_check.json). Exits 1 when a check
fails. Without CUDA it says so and exits 0 (`--tiny` runs sections 1-2 on small shapes on any device: a smoke test
of this script, which on the CPU exercises fastft's PyTorch path, not its Triton kernels).
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root in place of this folder, whose kernels.py
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # would shadow the `kernels` transformers imports

import torch  # noqa: E402

from bench import kernel_cases as kc  # noqa: E402
from bench import machine  # noqa: E402
from bench.config import REPO  # noqa: E402
from tests.kernels.numerics import TOL, rel_err  # noqa: E402

LLAMA_3B = {"hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 28, "num_attention_heads": 24,
            "num_key_value_heads": 8, "head_dim": 128}
REAL = {"tokens": 2048, "hidden": 3072, "inter": 8192, "heads": 24, "kv_heads": 8, "head_dim": 128,
        "vocab": 128_256, "gemma_hidden": 2560, "gemma_vocab": 262_144, "ranks": (16, 256), "ce_rows": 10_000}
TINY = {"tokens": 64, "hidden": 128, "inter": 256, "heads": 4, "kv_heads": 2, "head_dim": 32,
        "vocab": 1000, "gemma_hidden": 96, "gemma_vocab": 4096, "ranks": (8,), "ce_rows": 32}
DTYPE = torch.bfloat16


def kernel_cases(s: dict, env):
    yield from kc.norm_cases(s["tokens"], s["hidden"], env)
    yield from kc.activation_cases(s["tokens"], s["inter"], env)
    yield from kc.rope_cases(s["tokens"], s["heads"], s["kv_heads"], s["head_dim"], env)
    for r in s["ranks"]:
        yield from kc.lora_cases(s["tokens"], s["hidden"], s["inter"], r, env)
    yield from kc.ce_cases(s["tokens"], s["vocab"], env)
    yield from kc.ce_cases(s["tokens"] // 2, s["gemma_vocab"], env)
    yield from kc.lce_cases((s["tokens"],), s["hidden"], s["vocab"], env)
    yield from kc.lce_cases((s["tokens"],), s["gemma_hidden"], s["gemma_vocab"], env)


def _backward(outputs, inputs: dict, grad_outputs) -> list:
    """Outputs and input gradients after backward from grad_outputs (cast to each output's dtype)."""
    torch.autograd.backward(outputs, [g.to(o.dtype) for o, g in zip(outputs, grad_outputs)])
    return [o.detach() for o in outputs] + [t.grad for t in inputs.values() if t.requires_grad]


def check_kernel(case) -> dict:
    """The case's fastft op at bf16 against its reference on fp32 copies: the worst relative error over outputs
    and input gradients."""
    row = {"check": "kernel", "what": case.kernel, "shape": case.shape, "tolerance": TOL[DTYPE]}
    try:
        torch.manual_seed(0)
        inputs = case.make()
        exact = {k: v.detach().float().requires_grad_(v.requires_grad) for k, v in inputs.items()}
        outputs = case.fastft(inputs)
        grad_outputs = [torch.randn(o.shape, device=o.device) for o in outputs]
        ours = _backward(outputs, inputs, grad_outputs)
        reference = _backward(case.reference(exact), exact, grad_outputs)
        row["value"] = max(rel_err(a, b) for a, b in zip(ours, reference))
        row["passed"] = row["value"] <= row["tolerance"] and all(bool(torch.isfinite(a).all()) for a in ours)
    except Exception as exc:  # a launch error is the finding this check exists for
        row.update(value=None, passed=False, error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    return row


def check_inplace_cross_entropy(rows: int, vocab: int, device: str) -> dict:
    """ce_rows writing its gradient over the logits against writing it elsewhere: identical, or a read raced."""
    from fastft.kernels.cross_entropy import ce_rows

    row = {"check": "ce in-place", "what": "in place vs out of place", "shape": f"{rows}x{vocab}", "tolerance": 0.0}
    try:
        torch.manual_seed(0)
        logits = torch.randn(rows, vocab, device=device, dtype=DTYPE) * 4
        labels = torch.randint(0, vocab, (rows,), device=device)
        labels[::7] = -100
        separate = torch.empty_like(logits)
        losses = ce_rows(logits, labels, -100, None, grad=separate)
        in_place = logits.clone()
        del logits
        losses_in_place = ce_rows(in_place, labels, -100, None, grad=in_place)
        row["value"] = max((losses - losses_in_place).abs().max().item(),
                           (separate.float() - in_place.float()).abs().max().item())
        row["passed"] = row["value"] == 0.0
    except Exception as exc:
        row.update(value=None, passed=False, error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    return row


def llama_3b_checkpoint() -> Path:
    """A Llama-3.2-3B-shaped model with random weights, saved once like bench's other random models."""
    from bench import models

    models.RANDOM.setdefault("llama3-3b", ("llama3", LLAMA_3B))
    return models.model_source("llama3-3b")


def throughput(systems: str, out: Path) -> list[dict]:
    """bench/throughput.py's quant sweep (LoRA and QLoRA) on the Llama-3.2-3B-shaped model; its rows."""
    rows_path = out / "throughput-rows.json"
    command = [sys.executable, str(REPO / "bench" / "throughput.py"), "--sweeps", "quant", "--systems", systems,
               "--set", f"model={llama_3b_checkpoint()}", "--out", str(out / "throughput"), "--json", str(rows_path)]
    done = subprocess.run(command, cwd=REPO)
    if done.returncode != 0 or not rows_path.exists():
        return [{"check": "throughput", "what": "bench/throughput.py", "shape": "", "passed": False,
                 "error": f"exit code {done.returncode}; see {out / 'throughput' / 'logs'}"}]
    found = []
    for r in json.loads(rows_path.read_text()):
        ran = not r.get("skipped_reason")
        found.append({"check": "throughput", "what": f"{r['system']} {'QLoRA' if r['quant'] == 'nf4' else 'LoRA'}",
                      "shape": f"Llama-3.2-3B shape, seq {r['seq_len']} x batch {r['batch']}", "passed": None,
                      "value": r.get("tokens_per_s") if ran else None, "unit": "tokens/s",
                      "peak_mem_gb": r["peak_mem_bytes"] / 1024**3 if ran and r.get("peak_mem_bytes") else None,
                      "error": r.get("skipped_reason")})
    return found


def print_table(rows: list[dict]) -> None:
    print(f"{'check':<12} {'result':<7} {'value':>10} {'limit':>7}  {'what':<40} shape / note")
    for r in rows:
        result = {True: "PASS", False: "FAIL", None: "-"}[r["passed"]]
        value = "-" if r.get("value") is None else f"{r['value']:.3g}"
        limit = r.get("unit", "") if r["check"] == "throughput" else f"{r['tolerance']:.0e}"
        note = r.get("error") or ""
        if r.get("peak_mem_gb"):
            note = f"peak {r['peak_mem_gb']:.1f} GB"
        print(f"{r['check']:<12} {result:<7} {value:>10} {limit:>7}  {r['what']:<40} {r['shape']} {note}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="where to write the results (default: bench/results/...)")
    parser.add_argument("--skip-throughput", action="store_true", help="kernel checks only (minutes, not hours)")
    parser.add_argument("--systems", default="fastft,hf-peft-trl,liger,unsloth", help="for the throughput run")
    parser.add_argument("--tiny", action="store_true", help="small shapes on any device: a smoke test of this script")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available() and not args.tiny:
        print("bench/gpu_check.py needs a CUDA GPU (torch.cuda.is_available() is False here), so nothing was checked. "
              "On a CPU, the test suite and `python -m tests.kernels.gpu_compile` check what can be checked.")
        return 0
    device = "cuda" if torch.cuda.is_available() else "cpu"
    shapes = TINY if args.tiny else REAL
    print(f"fastft gpu_check on {machine.machine_text()}\n{machine.software_text()}", flush=True)
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        print(f"compute capability {props.major}.{props.minor}, "
              f"{props.shared_memory_per_block_optin:,} B shared memory per block (opt-in)", flush=True)
    rows = [check_kernel(case) for case in kernel_cases(shapes, (device, DTYPE))]
    rows.append(check_inplace_cross_entropy(shapes["ce_rows"], shapes["gemma_vocab"], device))
    out = machine.results_dir()
    if not args.skip_throughput and not args.tiny:
        rows += throughput(args.systems, out)
    print_table(rows)
    json_path = args.json or out / "gpu_check.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": machine.machine_text(), "software": machine.software_text(), "device": device,
            "shapes": {k: list(v) if isinstance(v, tuple) else v for k, v in shapes.items()}}
    json_path.write_text(json.dumps({**meta, "rows": rows}, indent=1), encoding="utf-8")
    print(f"wrote {json_path}")
    return 1 if any(r["passed"] is False for r in rows) else 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())

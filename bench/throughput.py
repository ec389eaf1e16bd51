"""Training throughput of fastft against the alternatives, on the same model, batches and settings.

    python bench/throughput.py [--quick] [--check] [--json PATH] [--sweeps seq,batch,...] [--systems fastft,...]

Each configuration runs in its own `python -m bench.run_one` process (fresh peak RSS); rows, a Markdown report
and plots go to bench/results/<device>-<date>/. --quick measures the issue's target configuration (checkpointing
off and on, and fastft's selective) and short bf16 and sequence-length sweeps; --check exits 1 when a target of bench/targets.py is not HIT.
"""
import argparse
import dataclasses
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root in place of this folder, whose kernels.py
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # would shadow the `kernels` transformers imports

from bench import machine, plan, targets  # noqa: E402
from bench.config import REPO, SYSTEMS, Config, checkpointing_label  # noqa: E402
from bench.outputs import write_outputs  # noqa: E402
from bench.run_one import ROW_PREFIX, base_row  # noqa: E402


def run_in_subprocess(cfg: Config, mem_limit: int, timeout: int, log_path: Path) -> dict:
    command = [sys.executable, "-m", "bench.run_one", cfg.to_json(), "--mem-limit-bytes", str(mem_limit)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    try:
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        log_path.write_text(f"{exc.stdout or ''}\n{exc.stderr or ''}", encoding="utf-8")
        return {**base_row(cfg), "skipped_reason": f"timed out after {timeout} s"}
    log_path.write_text(done.stdout + "\n--- stderr ---\n" + done.stderr, encoding="utf-8")
    rows = [line[len(ROW_PREFIX):] for line in done.stdout.splitlines() if line.startswith(ROW_PREFIX)]
    if rows:
        return json.loads(rows[-1])
    code = done.returncode
    why = f"killed by signal {-code} (out of memory?)" if code < 0 else f"exit code {code}"
    last = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
    return {**base_row(cfg), "skipped_reason": f"failed, {why}: {last}"}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the target configuration (checkpointing off and on, "
                        "fastft's selective too), "
                        "bf16 and sequence lengths 256/1024/4096 for fastft and hf-peft-trl; see bench/plan.py")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when fastft misses a target of bench/targets.py against hf-peft-trl in this run")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument("--out", type=Path, help="output folder (default bench/results/<device>-<date>)")
    parser.add_argument("--sweeps", default=",".join(plan.SWEEPS), help=f"comma list of {', '.join(plan.SWEEPS)}")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--timed", type=int, default=3)
    parser.add_argument("--gradient-checkpointing", nargs="?", const="on", default="off", choices=plan.CHECKPOINTING,
                        help="off (default), on (alone: on), selective (fastft only; other systems' rows say they "
                             "have none), both (off, on) or all (off, selective, on), for every system and point "
                             "(not with --quick: it measures off and on, and fastft's selective, at the target)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a Config field in every configuration, e.g. --set model=PATH --set seq_len=128")
    parser.add_argument("--mem-limit-gb", type=float, default=machine.total_memory_bytes() * 0.85 / 1024**3,
                        help="address-space limit per configuration (default 85%% of RAM; a torch process maps "
                             "2-3 GB more than it touches, so the usable resident memory is that much lower)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per configuration")
    return parser.parse_args(argv)


def chosen_configs(args) -> list[Config]:
    systems = args.systems.split(",")
    if args.quick:
        configs = plan.quick(systems)
    else:
        configs = plan.configs(args.sweeps.split(","), systems, args.warmup, args.timed,
                               plan.CHECKPOINTING[args.gradient_checkpointing])
    overrides = dict(_field_value(item) for item in args.set)
    return list(dict.fromkeys(dataclasses.replace(cfg, **overrides) for cfg in configs))  # overrides may merge points


def _field_value(item: str) -> tuple[str, object]:
    field, _, text = item.partition("=")
    try:
        return field, json.loads(text)  # numbers, true/false, null
    except json.JSONDecodeError:
        return field, text  # a model name or path


def main(argv=None) -> None:
    args = parse_args(argv)
    configs = chosen_configs(args)
    out, stem = args.out or machine.results_dir(), "throughput-quick" if args.quick else "throughput"
    (out / "logs").mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]  # before this run adds its own
    dtypes = sorted({cfg.compute_dtype for cfg in configs})
    peak_before, rows, started = machine.measure_peak(dtypes), [], time.time()
    for n, cfg in enumerate(configs, 1):
        log = out / "logs" / f"{stem}-{n:03d}-{cfg.system}.log"
        rows.append(run_in_subprocess(cfg, int(args.mem_limit_gb * 1024**3), args.timeout, log))
        print(f"[{n}/{len(configs)} {time.time() - started:.0f}s] {describe(cfg, rows[-1])}", flush=True)
    command = " ".join(["python bench/throughput.py", *(sys.argv[1:] if argv is None else argv)])
    meta = run_meta(peak_before, machine.measure_peak(dtypes), command, "quick" if args.quick else "full")
    meta["warning"] = machine.busy_warning(load, meta["peak_before"], meta["peak_after"])
    write_outputs(rows, meta, out, stem, args.json)
    if args.check:
        sys.exit(targets.main([str(out / f"{stem}.json")]))  # the rows as written, MFU filled in


def describe(cfg: Config, row: dict) -> str:
    if row["skipped_reason"]:
        result = f"skipped: {row['skipped_reason']}"
    else:
        result = f"{row['tokens_per_s']:.1f} tokens/s, grad norm {row['grad_norm']:.3g}"
        result += f", FAILED: {row['failed_reason']}" if row["failed_reason"] else ""
    return (f"{cfg.system} {cfg.model} seq {cfg.seq_len} batch {cfg.batch} {cfg.quant} {cfg.compute_dtype} "
            f"grad. ckpt {checkpointing_label(cfg.gradient_checkpointing)} masked {cfg.mask:.2f}: {result}")


def run_meta(peak_before: dict, peak_after: dict, command: str, mode: str) -> dict:
    return {"device_name": machine.device_name(), "date": f"{datetime.date.today():%Y-%m-%d}",
            "machine": machine.machine_text(), "software": machine.software_text(), "command": command, "mode": mode,
            "peak_what": machine.peak_what(), "memory_what": machine.memory_what(),
            # per dtype, the higher of two measurements: a busy moment can only slow a matmul down
            "peak_flops": {dtype: max(peak_before[dtype], peak_after[dtype]) for dtype in peak_before},
            "peak_before": peak_before, "peak_after": peak_after}


if __name__ == "__main__":
    main()

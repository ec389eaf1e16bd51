"""Run one configuration in this process and print its row.

`python -m bench.run_one '<Config JSON>' [--mem-limit-bytes N]`. throughput.py starts a fresh process per
configuration, so the peak RSS reported is that configuration's alone. The row is the last stdout line,
prefixed with ROW_PREFIX; everything else the libraries print is left alone.
"""
import argparse
import json
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

from .config import LORA, Config, device, selective_unavailable
from .machine import dtype_unavailable

ROW_PREFIX = "BENCH_ROW "
FIELDS = ("system", "workload", "model", "seq_len", "batch", "quant", "device", "dtype", "gradient_checkpointing",
          "tokens_per_s", "trained_tokens_per_s", "step_s", "peak_mem_bytes", "peak_flops_beside", "useful_mfu",
          "useful_mfu_run", "first_loss", "final_loss", "grad_norm", "failed_reason", "skipped_reason")


@dataclass
class Prepared:
    source: Path
    tokenizer: object
    model_config: object
    batches: list  # list[list[bench.data.Row]], one list per step
    natural_masked: float  # prompt fraction of the sample before fitting to seq_len
    resolved: object  # fastft.models.resolve.ResolvedModel, which fastft's systems build from


def prepare(cfg: Config) -> Prepared:
    from fastft.models.resolve import resolve_model

    from .data import batched, encoded_sample, fitted_rows, natural_masked_fraction
    from .models import model_source
    from .recipe import fastft_recipe

    source = model_source(cfg.model)
    recipe = fastft_recipe(cfg, source)
    resolved = resolve_model(recipe, notify=lambda *_: None)
    tokenizer, config = resolved.tokenizer, resolved.config
    if resolved.new_token_ids:  # would need resized embeddings in every system; the benchmark models all have their chat tokens
        raise SystemExit(f"{source}: the tokenizer lacks its chat template's tokens")
    pieces = encoded_sample(recipe.dataset, tokenizer)
    vocab = config.get_text_config().vocab_size
    rows = fitted_rows(pieces, cfg.steps * cfg.batch, cfg.seq_len, cfg.mask, vocab)
    return Prepared(source, tokenizer, config, batched(rows, cfg.batch), natural_masked_fraction(pieces), resolved)


def base_row(cfg: Config) -> dict:
    row = dict.fromkeys(FIELDS)
    row.update(system=cfg.system, workload=cfg.workload, model=cfg.model, seq_len=cfg.seq_len, batch=cfg.batch,
               quant=cfg.quant, device=device(), dtype=cfg.compute_dtype, masked_frac=cfg.mask, warmup=cfg.warmup,
               timed=cfg.timed, gradient_checkpointing=cfg.gradient_checkpointing)
    return row


def run_config(cfg: Config) -> dict:
    """The row of one configuration, with the matmul peak measured beside its steps (useful_mfu stays None:
    measure.with_mfu fills it in, needing the run's peak as well)."""
    from fastft.training.usage import peak_memory_bytes

    from . import systems
    from .flops import useful_step_flops
    from .machine import measure_peak
    from .measure import median, timed_steps
    from .targets import failure

    row, system = base_row(cfg), systems.system(cfg.system)
    reason = selective_unavailable(cfg) or dtype_unavailable(cfg.compute_dtype) or system.unavailable(cfg)
    if reason:
        return {**row, "skipped_reason": reason}
    data = prepare(cfg)
    run = system.build(cfg, data)
    losses, seconds = timed_steps(run, cfg.warmup, cfg.timed, row["device"])
    first = data.batches[0]
    tokens, trained = cfg.batch * cfg.seq_len, sum(r.trained for r in first)
    useful_flops = useful_step_flops(data.model_config, cfg.batch, cfg.seq_len, trained, LORA["r"], LORA["targets"])
    step_s = median(seconds)
    row = {**row, "masked_frac": first[0].n_prompt / cfg.seq_len, "natural_masked_frac": data.natural_masked,
           "tokens_per_s": tokens / step_s, "trained_tokens_per_s": trained / step_s, "step_s": step_s,
           "step_times": seconds, "tokens_per_step": tokens, "trained_tokens_per_step": trained,
           "useful_flops_per_step": useful_flops, "first_loss": losses[0], "losses": losses, "final_loss": run.loss(0),
           "grad_norm": run.grad_norm, "peak_mem_bytes": peak_memory_bytes(row["device"]), "kernels": run.notes,
           "settings": run.settings()}
    # after the peak memory is read: the machine's matmul speed right after the timed steps, in their process
    row["peak_flops_beside"] = measure_peak([cfg.compute_dtype]).get(cfg.compute_dtype)
    return {**row, "failed_reason": failure(row)}


def _out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or any(s in text for s in ("allocate memory", "out of memory"))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="a Config as JSON")
    parser.add_argument("--mem-limit-bytes", type=int, default=0, help="address-space limit for this process (0: none)")
    args = parser.parse_args(argv)
    cfg = Config.from_json(args.config)
    if args.mem_limit_bytes:
        from .measure import limit_address_space

        limit_address_space(args.mem_limit_bytes)
    try:
        row = run_config(cfg)
    except Exception as exc:  # a failed configuration is a row with its reason, never a silent gap
        traceback.print_exc()
        kind = "out of memory" if _out_of_memory(exc) else "failed"
        row = {**base_row(cfg), "skipped_reason": f"{kind}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
    print(ROW_PREFIX + json.dumps(row), flush=True)


if __name__ == "__main__":
    sys.exit(main())

"""Which configurations a run measures: the issue's target configuration (--quick), or sweeps around it."""
from .config import SELECTIVE_SYSTEMS, SYSTEMS, Config
from .models import EMBEDDED, RANDOM

# The target: Gemma 3 270M, LoRA r=16 on seven projections, summarization (~90% masked), seq 1024, batch 2.
TARGET = {"model": EMBEDDED, "workload": "summarization", "seq_len": 1024, "batch": 2, "quant": "none"}

SWEEPS = {
    "target": [{}],
    "seq": [{"seq_len": n, "batch": 1} for n in (256, 512, 1024, 2048, 4096)],
    "batch": [{"seq_len": 512, "batch": b} for b in (1, 2, 4)],
    "quant": [{"seq_len": 512, "batch": 2, "quant": q} for q in ("none", "nf4")],
    "masked": [{"batch": 1, "masked_frac": f} for f in (0.0, 0.5, 0.75, 0.97)],  # 0.9: the seq sweep's 1024 point
    "chat": [{"workload": "chat"}],
    "models": [{"model": m, "batch": 1} for m in RANDOM],
    "bf16": [{"dtype": "bfloat16"}],  # the model in bf16 (on CPU: where the CPU has native bf16 matmuls)
}
CHECKPOINTING = {"off": (False,), "on": (True,), "selective": ("selective",), "both": (False, True),
                 "all": (False, "selective", True)}
PAIR = ("fastft", "hf-peft-trl")  # the systems the targets compare, and --quick's sweeps
QUICK_SEQ = (256, 1024, 4096)  # --quick's short sequence-length sweep: its ends and middle, 1 warm-up + 1 timed step


def configs(sweeps, systems=SYSTEMS, warmup: int = 1, timed: int = 3, checkpointing=(False,)) -> list[Config]:
    """Every system on every point of the named sweeps (each point varying TARGET), with gradient checkpointing in
    each of the given settings; duplicates measured once."""
    unknown = set(sweeps) - set(SWEEPS)
    if unknown:
        raise SystemExit(f"unknown sweep(s) {', '.join(sorted(unknown))}: pick from {', '.join(SWEEPS)}")
    out = []
    for name in sweeps:
        for point in SWEEPS[name]:
            for on in checkpointing:
                for system in systems:
                    cfg = Config(system=system, warmup=warmup, timed=timed, gradient_checkpointing=on,
                                 **{**TARGET, **point})
                    if cfg not in out:
                        out.append(cfg)
    return out


def quick(systems=SYSTEMS) -> list[Config]:
    """What the targets need and a skeptic asks for, about 15 minutes on the quiet 2-core CPU: every system at the
    target configuration with gradient checkpointing off and on (1 warm-up + 2 timed steps) and fastft with it
    selective, then fastft and hf-peft-trl in bf16 (skipped, quoting a small bf16 matmul's measured speed, on a CPU
    without native bf16: machine.dtype_unavailable) and at QUICK_SEQ (batch 1, 1 warm-up + 1 timed step)."""
    pair = [s for s in systems if s in PAIR]
    seq = [cfg for cfg in configs(["seq"], pair, warmup=1, timed=1) if cfg.seq_len in QUICK_SEQ]
    selective = configs(["target"], [s for s in systems if s in SELECTIVE_SYSTEMS], 1, 2, CHECKPOINTING["selective"])
    return configs(["target"], systems, 1, 2, CHECKPOINTING["both"]) + selective + configs(["bf16"], pair, 1, 2) + seq

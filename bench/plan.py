"""Which configurations a run measures: the issue's target configuration (--quick), or sweeps around it."""
from .config import SYSTEMS, Config
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
}


def configs(sweeps, systems=SYSTEMS, warmup: int = 1, timed: int = 3,
            gradient_checkpointing: bool = False) -> list[Config]:
    """Every system on every point of the named sweeps, each point varying TARGET; duplicates measured once."""
    unknown = set(sweeps) - set(SWEEPS)
    if unknown:
        raise SystemExit(f"unknown sweep(s) {', '.join(sorted(unknown))}: pick from {', '.join(SWEEPS)}")
    out = []
    for name in sweeps:
        for point in SWEEPS[name]:
            for system in systems:
                cfg = Config(system=system, warmup=warmup, timed=timed, gradient_checkpointing=gradient_checkpointing,
                             **{**TARGET, **point})
                if cfg not in out:
                    out.append(cfg)
    return out


def quick(systems=SYSTEMS) -> list[Config]:
    """The target configuration only, 1 warm-up + 2 timed steps: under 10 minutes on the 2-core CPU."""
    return configs(["target"], systems, warmup=1, timed=2)

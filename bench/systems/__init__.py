"""The systems compared. Each module has `unavailable(cfg) -> reason or None` and `build(cfg, data) -> run`, where
run.step(i) trains one optimizer step on batch i and returns its loss, run.loss(i) is the loss without training,
run.notes / run.settings() say what ran."""
import importlib

from ..config import SYSTEMS

MODULES = dict(zip(SYSTEMS, ("fastft", "fastft_nokernels", "hf_peft_trl", "liger", "unsloth")))


def system(name: str):
    if name not in MODULES:
        raise SystemExit(f"unknown system {name!r}: one of {', '.join(MODULES)}")
    return importlib.import_module(f"{__name__}.{MODULES[name]}")

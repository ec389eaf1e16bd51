"""Pre-flight: the memory and disk a run will need (models/footprint.py) against what this machine has, checked
after the data is read and before any weight is loaded. A run that cannot fit stops here, naming the recipe keys
that shrink it; `fastft run --force` runs it anyway."""
import math
import shutil
from pathlib import Path

import torch

from ..data.encode import IGNORE_INDEX
from ..errors import FastftError
from ..models.footprint import Footprint, estimate, meta_model
from ..runtime.writable import nearest_existing
from ..training.args import optimizer_name

GIB = 1 << 30
MEMORY_FIXES = ("lower training.batch_size and raise training.grad_accum to keep their product, lower "
                "dataset.max_prompt_tokens, set training.gradient_checkpointing: true, or train with QLoRA (--use-qlora)")


def shown(size: float) -> str:
    return f"{size / GIB:.2f} GiB" if size >= GIB else f"{size / (1 << 20):.1f} MiB"


def _meminfo(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def process_rss() -> int:
    """This process's resident memory now (the interpreter and libraries the run adds to)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def device_memory() -> tuple[int, str]:
    """(bytes the run may still use, what they are)."""
    if torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        return free, f"free on {torch.cuda.get_device_name()}"
    return _meminfo("MemAvailable"), "RAM available"


def kept_checkpoints(recipe, train_rows: int, world: int) -> int:
    """How many checkpoint folders the run will hold at once (rotation keeps save_total_limit)."""
    t = recipe.training
    steps = t.max_steps if t.max_steps > 0 else math.ceil(math.ceil(train_rows / (t.batch_size * t.grad_accum * world)) * t.epochs)
    saves = steps // t.save_steps if t.save_steps else math.ceil(t.epochs)
    return max(1, min(saves, t.save_total_limit or saves))


def footprint(resolved, dataset) -> Footprint:
    recipe = resolved.recipe
    answers = max(sum(label != IGNORE_INDEX for label in labels) for labels in dataset["labels"])
    model = meta_model(resolved.config, recipe.model.trust_remote_code)
    return estimate(model, recipe, optimizer_name(recipe.training.optimizer), longest(dataset), answers,
                    torch.cuda.is_available(), len(resolved.new_token_ids))


def longest(dataset) -> int:
    return max(len(ids) for ids in dataset["input_ids"])


def preflight(resolved, dataset, output_dir: Path, force: bool, world: int = 1) -> list[str]:
    """The start-up summary's memory and disk lines; raises when the run cannot fit and `force` is off."""
    recipe = resolved.recipe
    need = footprint(resolved, dataset)
    memory, kind = device_memory()
    on_cpu = not torch.cuda.is_available()
    peak = need.training + (process_rss() if on_cpu else 0)
    disk_folder = nearest_existing(output_dir.absolute())
    disk = shutil.disk_usage(disk_folder).free
    kept = kept_checkpoints(recipe, len(dataset), world)
    disk_need = kept * need.checkpoint + need.final_model
    parts = (f"weights {shown(need.weights)}, LoRA state {shown(need.trained)}, activations {shown(need.activations)} "
             f"at batch {recipe.training.batch_size} x {longest(dataset)} tokens, loss {shown(need.loss)}")
    lines = [
        f"  memory     about {shown(need.training)} for training ({parts}){f', peak {shown(peak)} with this process' if on_cpu else ''}; "
        f"{shown(memory)} {kind}",
        f"  disk       {kept} checkpoint(s) of {shown(need.checkpoint)} and final_model {shown(need.final_model)}; "
        f"{shown(disk)} free in {disk_folder}",
    ]
    if force:
        return lines
    if need.training > memory:
        raise FastftError(f"the run needs about {shown(need.training)} of memory ({parts}) but only {shown(memory)} is {kind}",
                          hint=f"{MEMORY_FIXES}; or pass --force to run anyway")
    if disk_need > disk:
        raise FastftError(
            f"{kept} checkpoint(s) and final_model need about {shown(disk_need)} on disk but {disk_folder} has {shown(disk)} free",
            hint="free disk space, lower training.save_total_limit or set output.dir on another disk; or pass --force to run anyway")
    return lines

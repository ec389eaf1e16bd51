"""The run's output folder: never silently overwritten, resumable, every attempt's recipe kept."""
import re
import shutil
from datetime import datetime
from pathlib import Path

import yaml

from ..errors import FastftError
from .lock import LOCK_FILE

RECIPE_FILE = "resolved_recipe.yaml"
CHECKPOINTS = "checkpoints"
METRICS = "metrics.json"  # written last: its presence marks a finished run
GENERATIONS = "generations"  # predictions of each in-training evaluation, one CSV per evaluation
FINAL_MODEL = "final_model"
ATTEMPTS = "attempts"  # every attempt's resolved recipe, kept when a rerun starts afresh


def recipe_yaml(recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(), allow_unicode=True, sort_keys=False)


def last_checkpoint(checkpoints: Path) -> Path | None:
    """The newest complete Trainer checkpoint (checkpoint-<step> folders holding trainer_state.json); a copy such as
    checkpoint-2-backup is not one."""
    found = [p for p in checkpoints.glob("checkpoint-*")
             if re.fullmatch(r"checkpoint-[0-9]+", p.name) and (p / "trainer_state.json").exists()]
    return max(found, key=lambda p: int(p.name.rsplit("-", 1)[1]), default=None)


def _same_recipe(output_dir: Path, recipe) -> bool:
    saved = output_dir / RECIPE_FILE
    return saved.exists() and saved.read_text(encoding="utf-8") == recipe_yaml(recipe)


def _contents(output_dir: Path) -> list[Path]:
    """What earlier attempts wrote: everything but the lock, which the run opening the folder holds."""
    return [p for p in output_dir.iterdir() if p.name != LOCK_FILE] if output_dir.is_dir() else []


def _remove(paths) -> None:
    for path in paths:
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def nothing_to_keep(output_dir: Path) -> bool:
    """The folder holds only what an attempt that stopped before its first checkpoint leaves (its recipe, step-0
    generations, a half-written checkpoint): no checkpoint, no final model, no finished run."""
    return (bool(_contents(output_dir)) and last_checkpoint(output_dir / CHECKPOINTS) is None
            and not (output_dir / FINAL_MODEL).exists() and not (output_dir / METRICS).exists())


def check_output_dir(output_dir: Path, recipe, mode: str) -> Path | None:
    """Decide what a run may do with its folder, before anything is written. Returns the checkpoint to resume.

    A plain run (mode "new") resumes by itself when the folder holds an unfinished run of the same recipe with a
    checkpoint, the usual state after a crash or a kill; a folder with nothing to keep is started afresh, by a plain
    run and by --resume alike; anything else already there is refused."""
    exists = bool(_contents(output_dir))
    if mode != "overwrite" and nothing_to_keep(output_dir):
        return None
    if mode == "resume":
        if not exists:
            raise FastftError(f"nothing to resume: {output_dir} does not exist", hint="run without --resume to start it")
        if not _same_recipe(output_dir, recipe):
            raise FastftError(
                f"--resume: the recipe differs from the one {output_dir} was trained with",
                hint=f"compare with {output_dir / RECIPE_FILE}, or pass --overwrite to start over",
            )
        return last_checkpoint(output_dir / CHECKPOINTS)
    if not exists or mode == "overwrite":
        return None
    checkpoint = last_checkpoint(output_dir / CHECKPOINTS)
    if checkpoint and not (output_dir / METRICS).exists() and _same_recipe(output_dir, recipe):
        return checkpoint
    raise FastftError(
        f"the output folder {output_dir} already holds a run",
        hint="pass --resume to continue it, --overwrite to replace it, or set another experiment name",
    )


def open_output_dir(output_dir: Path, recipe, mode: str) -> str | None:
    """Create (or, with overwrite, empty) the folder and record this attempt's resolved recipe. Returns a line for
    the run log when an earlier attempt left nothing to keep: its leftovers go, its recipe stays in attempts/."""
    notice = None
    if mode == "overwrite":
        _remove(_contents(output_dir))
    elif nothing_to_keep(output_dir):
        notice = (f"--resume: there is no checkpoint yet in {output_dir}; starting afresh" if mode == "resume" else
                  f"{output_dir} holds an earlier attempt that stopped before its first checkpoint: nothing to resume, "
                  "starting afresh")
        notice += f" (its recipe stays in {ATTEMPTS}/)"
        _remove(path for path in _contents(output_dir) if path.name != ATTEMPTS)
    output_dir.mkdir(parents=True, exist_ok=True)
    text = recipe_yaml(recipe)
    (output_dir / RECIPE_FILE).write_text(text, encoding="utf-8")
    attempts = output_dir / ATTEMPTS
    attempts.mkdir(exist_ok=True)
    # To the microsecond: a rerun of an attempt that failed at once still gets its own record, in time order.
    (attempts / f"{datetime.now().strftime('%Y%m%d_%H%M%S_%f')}_{RECIPE_FILE}").write_text(text, encoding="utf-8")
    return notice

"""Checkpoints appear whole or not at all.

Each checkpoint is written into a hidden staging folder beside its final place, flushed to disk, and renamed into
place in one step (a rename within a filesystem is atomic). A crash mid-save leaves only the staging folder, which
the `checkpoint-*` globs of transformers' rotation and of `last_checkpoint` never match, so resume cannot load it.
"""
import os
import shutil
from pathlib import Path

from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from ..runtime.outputs import last_checkpoint
from ..runtime.writable import disk_full, folder_size, is_disk_full

STAGING_PREFIX = ".partial-"


def staging_folder(final: Path) -> Path:
    return final.with_name(STAGING_PREFIX + final.name)


def clear_staging(run_dir: Path) -> None:
    """Remove what earlier crashed saves left behind."""
    for leftover in run_dir.glob(STAGING_PREFIX + "*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(staging: Path, final: Path) -> None:
    """Move a completely written staging folder to `final`. Files reach the disk before the rename does, so even a
    power cut cannot leave a renamed folder with empty files."""
    for path in staging.rglob("*"):
        if path.is_file():
            _fsync(path)
    stale = staging.with_name(staging.name + ".old")
    if final.exists():  # the same step saved twice: a rename cannot land on a non-empty folder
        os.replace(final, stale)
    os.replace(staging, final)
    shutil.rmtree(stale, ignore_errors=True)
    _fsync(final.parent)


class AtomicCheckpoints:
    """Trainer mixin: Trainer's checkpoint (weights, optimizer, scheduler, scaler, RNG, trainer state) with the same
    best-checkpoint tracking and rotation, but staged and published whole."""

    def _save_checkpoint(self, model, trial):
        run_dir = Path(self._get_output_dir(trial))
        final = run_dir / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging = staging_folder(final)
        if self.args.should_save:
            clear_staging(run_dir)
        self.accelerator.wait_for_everyone()  # every process writes its parts (RNG states) into a clean folder
        try:
            self._write_checkpoint(model, run_dir, staging, final)
        except OSError as error:
            if not is_disk_full(error):
                raise
            # The half-written staging folder goes; the complete checkpoints before it stay as they were.
            previous = last_checkpoint(run_dir)
            needed = max(folder_size(previous) if previous else 0, folder_size(staging))
            shutil.rmtree(staging, ignore_errors=True)
            raise disk_full(f"checkpoint {final.name}", run_dir, needed, previous) from None

    def _write_checkpoint(self, model, run_dir: Path, staging: Path, final: Path) -> None:
        self.store_flos()
        self.save_model(str(staging), _internal_call=True)
        self.state.best_model_checkpoint = self._best_checkpoint(run_dir)
        if not self.args.save_only_model:
            self._save_optimizer_and_scheduler(str(staging))
            self._save_scaler(str(staging))
            self._save_rng_state(str(staging))
        if self.args.should_save:
            self._save_trainer_state(staging)
        self.accelerator.wait_for_everyone()  # all parts written before the folder becomes visible
        if self.args.should_save:
            publish(staging, final)
            rotate_checkpoints(str(run_dir), self.args.save_total_limit, self.state.best_model_checkpoint, use_mtime=True)

    def _best_checkpoint(self, run_dir: Path) -> str | None:
        """Trainer records the best checkpoint once its folder exists; the one being staged now counts as existing."""
        step = self.state.best_global_step
        path = os.path.join(str(run_dir), f"{PREFIX_CHECKPOINT_DIR}-{step}")
        if step and (step == self.state.global_step or os.path.isdir(path)):
            return path
        return self.state.best_model_checkpoint

    def _save_trainer_state(self, folder: Path) -> None:
        # Stateful callbacks (early stopping, the control flags) are recorded the way Trainer records them.
        for callback in [*self.callback_handler.callbacks, self.control]:
            if isinstance(callback, ExportableState):
                name = type(callback).__name__
                if isinstance(self.state.stateful_callbacks[name], list):
                    self.state.stateful_callbacks[name].append(callback.state())
                else:
                    self.state.stateful_callbacks[name] = callback.state()
        self.state.save_to_json(str(folder / TRAINER_STATE_NAME))

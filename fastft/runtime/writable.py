"""Output locations checked before any work: a file in the way, a folder that cannot be created or written, a
read-only filesystem. Each refusal names the location, the recipe key or option that sets it, and what is wrong."""
import errno
import os
import shutil
from pathlib import Path

from ..errors import FastftError


def nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable_folder(folder, key: str) -> None:
    """`folder` exists as a writable folder or can be created. `key` names what sets it (output.dir, --out)."""
    folder = Path(folder).absolute()
    existing = nearest_existing(folder)
    blocked = "" if existing == folder else f" cannot be created: {existing}"
    fix = f"choose another {key}"
    if not existing.is_dir():
        raise FastftError(f"{key} {folder}{blocked} is a file, not a folder", hint=f"move the file away or {fix}")
    if os.statvfs(existing).f_flag & os.ST_RDONLY:
        raise FastftError(f"{key} {folder}{blocked} is on a read-only filesystem", hint=fix)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise FastftError(f"{key} {folder}{blocked} is not writable by this user", hint=f"change its permissions or {fix}")


def check_writable_file(path, key: str) -> None:
    """`path` can be written as a file: its folder passes check_writable_folder and it is not itself a folder."""
    path = Path(path).absolute()
    if path.is_dir():
        raise FastftError(f"{key} {path} is a folder, not a file", hint=f"name a file, e.g. {path / 'predictions.csv'}")
    check_writable_folder(path.parent, key)


def folder_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def disk_full(what: str, folder: Path, needed: int, previous: Path | None) -> FastftError:
    """The refusal for a save that ran out of space; `needed`: the bytes the save takes, `previous`: what survives."""
    free = shutil.disk_usage(nearest_existing(Path(folder).absolute())).free
    kept = f"the last complete checkpoint {previous} is untouched" if previous else "no checkpoint was saved before it"
    return FastftError(
        f"the disk is full: saving {what} into {folder} needs about {needed / (1 << 20):.1f} MiB, "
        f"{free / (1 << 20):.1f} MiB are free; {kept}",
        hint="free disk space (or lower training.save_total_limit), then run the same command to continue")


def check_output_locations(run_dir: Path, logs_dir: Path) -> None:
    """Where `fastft run` writes: its run folder (output.dir/<experiment>) and its logs."""
    check_writable_folder(run_dir, "output.dir")
    check_writable_folder(logs_dir, "output.logs_dir")

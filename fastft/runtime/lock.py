"""One writer per run folder: an exclusive OS lock (flock) on a file in the folder, held while the run lives. The
kernel drops it when the process ends, however it ends, so a crashed run never leaves a stale lock; the file keeps
the holder's process id and host for the refusal message."""
import fcntl
import os
import socket
from pathlib import Path

from ..errors import FastftError

LOCK_FILE = ".fastft.lock"


class RunFolderLock:
    def __init__(self, folder: Path):
        self.folder = folder
        self._fd = None

    def acquire(self, create: bool = False) -> None:
        """Take the lock (a no-op when this process holds it), making the folder first when `create`; refuse when
        another process holds it."""
        if self._fd is not None:
            return
        if create:
            self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 256).decode("utf-8", "replace").split() or ["?", "?"]
            os.close(fd)
            pid, host = (holder + ["?"])[:2]
            raise FastftError(
                f"the output folder {self.folder} is in use by another fastft run (process {pid} on {host})",
                hint="wait for it to end or stop it (Ctrl-C saves a checkpoint), or set another experiment name",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        # The file stays: deleting it would let a third process lock a new file while a second waits on this one.
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

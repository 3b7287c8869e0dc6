"""Owning a run folder: one that holds the user's own files is not written into (unless forced), and one process at
a time trains in a run folder.

The lock is ``run.lock`` in the folder, held with ``fcntl.flock`` while a process trains there and naming it (pid and
host) for the message a second process gets. The operating system releases the lock when its process ends, however
it ends, so a lock left by a dead process is simply taken over. (POSIX only; the lock is advisory and local: it does
not guard a folder on a network file system shared by several machines.)
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from weakdml.engine.dist import launched_rank
from weakdml.errors import UserError

LOCK_NAME = "run.lock"


def is_run_folder(folder: Path) -> bool:
    """Whether ``folder`` was made by weakdml: it holds a lock file, or the config and split of an older run."""
    return (folder / LOCK_NAME).is_file() or ((folder / "config.yaml").is_file() and (folder / "split.json").is_file())


def refuse_foreign(folder: Path) -> None:
    """A non-empty folder that is not a run belongs to the user: writing a run into it would replace their files."""
    if folder.is_dir() and any(folder.iterdir()) and not is_run_folder(folder):
        raise UserError(f"{folder} holds files but is not a weakdml run directory; choose an empty or new --out "
                        f"(or pass --force to write the run among those files, replacing any of the same name)")


@contextmanager
def locked_run_folder(folder: Path) -> Iterator[None]:
    """Create ``folder`` if needed and hold its lock for the duration; a folder made here that is left with nothing
    but the lock (the run failed before writing) is removed again. Of the processes of a torchrun launch, rank 0
    holds the lock for all."""
    if launched_rank() != 0:
        folder.mkdir(parents=True, exist_ok=True)
        yield
        return
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    held = False
    with open(folder / LOCK_NAME, "a+", encoding="utf-8") as handle:
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise UserError(f"{folder} is in use: {holder} is training in it; wait for it to end, or choose "
                                f"another --out") from None
            held = True
            handle.seek(0)
            handle.truncate()
            handle.write(f"process {os.getpid()} on {socket.gethostname()}\n")
            handle.flush()
            yield
        finally:
            if held and created and [p.name for p in folder.iterdir()] == [LOCK_NAME]:
                (folder / LOCK_NAME).unlink()
                folder.rmdir()

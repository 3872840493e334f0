"""One writer per output folder: a lock file holding the writer's pid, with stale locks detected.

``fitkit fit -o OUT`` holds ``OUT/.fitkit.lock`` while it runs. A second
process that wants the same folder is refused with the holder's pid and start
time. A lock whose process is gone (killed, crashed, machine rebooted) is
stale: the next writer replaces it, with a warning.

The lock is created with ``O_CREAT | O_EXCL``, so two processes starting at
the same moment cannot both take it. A lock written on another host (a shared
file system) cannot be checked for liveness and is always refused.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from fitkit.errors import FitkitError

log = logging.getLogger(__name__)

LOCK_NAME = ".fitkit.lock"


class FolderLockedError(FitkitError):
    """Another live process is writing the output folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _try_create(path: Path, what: str) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "what": what}, f)
    return True


@contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "fitkit") -> Iterator[Path]:
    """Hold ``folder/.fitkit.lock`` for the duration of the ``with`` block.

    The folder is created if needed, and removed again if this call created it
    and it is still empty at the end.

    Raises:
        FolderLockedError: naming the folder and the live holder's pid, host and start time.
    """
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    if not _try_create(path, what):
        holder = _read(path)
        pid, host = holder.get("pid"), holder.get("host")
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
        same_host = host == socket.gethostname()
        if isinstance(pid, int) and same_host and not _alive(pid):
            log.warning("%s: removing a stale lock of pid %d (started %s; that process is gone)", path, pid, since)
            path.unlink(missing_ok=True)
            if not _try_create(path, what):
                raise FolderLockedError(f"{folder}: another process took the lock ({path}) just now")
        else:
            who = f"pid {pid} on {host}" if holder else "an unreadable lock file"
            raise FolderLockedError(
                f"{folder}: is being written by {who} (since {since}; lock file {path}); wait for it, use "
                f"another output folder, or delete the lock file if that process is really gone")
    try:
        yield path
    finally:
        if _read(path).get("pid") == os.getpid():
            path.unlink(missing_ok=True)
        if created and not any(folder.iterdir()):
            folder.rmdir()  # a run that wrote nothing leaves nothing behind

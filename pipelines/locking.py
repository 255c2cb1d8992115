"""One writer at a time: an exclusive lock on a path (a run directory, a data root, a snapshot
stage, a dedup index), with the holder named when a second writer is refused.

    with exclusive_lock(run_dir / ".lock", what=f"training run {run_dir}"):
        ...   # only this process writes under run_dir

The lock is `flock(2)` on a small file. The kernel drops it when the holder's process ends, by
any means including kill -9, so a stale lock is taken over at once and nothing waits forever on
a dead process. The file's content (pid, host, since when, command) only serves the message.
flock is per open file description: a second open in the same process is refused too, which is
what a second run in one test process wants. On network file systems without flock support the
lock is as good as the file system's; training on shared storage takes it on the rank-0 node.

Exit code 2 is what the CLIs return for a refused lock (`LockHeld` is a user error).
No torch import: the data stages and the CLIs use it as well as training.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterator


_NAMELESS_RETRIES = 40  # x 50 ms: how long a refusal waits for the holder's name to appear


class LockHeld(RuntimeError):
    """Another live process holds the lock; the message names the path and the holder."""

    def __init__(self, path: Path, what: str, holder: dict):
        self.path, self.holder = path, holder
        who = (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} "
               f"since {holder.get('since', '?')}") if holder else "another process"
        super().__init__(f"{what} is in use by {who} (lock {path}); wait for it to finish, "
                         f"or use another location")


def _read_holder(fd: int) -> dict:
    with contextlib.suppress(OSError, ValueError):
        os.lseek(fd, 0, os.SEEK_SET)
        data = os.read(fd, 4096)
        holder = json.loads(data.decode() or "{}")
        return holder if isinstance(holder, dict) else {}
    return {}


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, what: str | None = None,
                   wait: bool = False) -> Iterator[Path]:
    """Hold an exclusive lock on `path` (created if missing) for the block. If another live
    process holds it: raise LockHeld at once, or with wait=True block until it is released
    (for writers that should serialise rather than fail, e.g. an index append)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    what = what or str(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        # A holder writes its name just after taking the lock and clears it just before letting
        # go: a refusal that finds no name retries for a moment, so the loser either gets the
        # lock (it was being released) or can name who holds it (it was being taken).
        for attempt in range(_NAMELESS_RETRIES + 1):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
                break
            except BlockingIOError:
                holder = _read_holder(fd)
                if holder or attempt == _NAMELESS_RETRIES:
                    raise LockHeld(path, what, holder) from None
                time.sleep(0.05)
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv[:3]),
        }
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(holder).encode())
        try:
            yield path
        finally:
            # Clear the holder before releasing, so a reader never names a finished process.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def is_locked(path: str | os.PathLike) -> bool:
    """Whether a live process holds the lock at `path` (for cleanup of staging directories:
    a staging directory whose owner still holds its lock is never removed)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)

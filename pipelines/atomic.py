"""Crash-safe outputs: a stage writes into a hidden staging directory and only renames it to its
final name after everything, `_SUCCESS.json` last, is written and fsynced. A directory under its
final name is therefore always complete; a `kill -9` leaves at most a staging directory, which
the next run deletes before redoing the work.

One writer per output: `staged_dir` holds the lock `.NAME.lock` beside the output while its
staging directory exists, so a second writer of the same output stops at once (`LockHeld`,
naming the holder) and the staging directories it finds are known to be left by dead processes.

A rerun with the same fingerprint (stage, code version, config, input hashes) finds
`_SUCCESS.json` and returns the recorded result instead of recomputing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

from pipelines.locking import exclusive_lock

SUCCESS = "_SUCCESS.json"


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(**parts) -> str:
    """A stable hash of JSON-able parts (config dicts, input hashes, code version)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def naming_the_file(path: str | os.PathLike):
    """An OSError from a write (a full disk) says which file: the OS's own names none."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None or exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from None


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """`text` as `path`: written and fsynced under a temporary name, then renamed, so the file is
    never half written under its name; on failure nothing is left behind and the error names it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with naming_the_file(path):
            with open(tmp, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, obj) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def completed(out_dir: str | os.PathLike, fp: str) -> dict | None:
    """The recorded summary if `out_dir` holds a finished run with fingerprint `fp`."""
    marker = Path(out_dir) / SUCCESS
    try:
        summary = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    return summary if summary.get("fingerprint") == fp else None


# Parquet writers open in each staging directory, so a failed stage can close them (see below).
_open_writers: dict[Path, list] = {}


def parquet_writer(path: str | os.PathLike, schema, **options):
    """A `pq.ParquetWriter` for a file in a staging directory. If the stage fails, `staged_dir`
    closes it quietly: left to `ParquetWriter.__del__`, the close of a writer whose disk is full
    fails again and prints "Exception ignored in ..." after the error was already reported."""
    import pyarrow.parquet as pq

    writer = pq.ParquetWriter(path, schema, **options)
    _open_writers.setdefault(Path(path).parent, []).append(writer)
    return writer


def _abandon_writers(stage: Path) -> None:
    for writer in _open_writers.pop(stage, []):
        with contextlib.suppress(Exception):
            writer.close()
        writer.is_open = False  # a close that failed must not be retried by __del__


def lock_path(out_dir: str | os.PathLike) -> Path:
    """The lock a writer of `out_dir` holds (beside it: `out_dir` itself is replaced)."""
    out_dir = Path(out_dir)
    return out_dir.parent / f".{out_dir.name}.lock"


def _remove_stale(out_dir: Path) -> None:
    """Staging leftovers of earlier writers. Only called under the output's lock: every writer
    holds it while its staging directory exists, so what is found here belongs to the dead."""
    for stale in out_dir.parent.glob(f".{out_dir.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in out_dir.parent.glob(f".{out_dir.name}.old-*"):
        shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def staged_dir(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging directory; on a clean exit it replaces `out_dir`. The caller
    writes `_SUCCESS.json` (with `write_json_atomic`) as its last file. Raises LockHeld at once
    when another live process is writing `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(lock_path(out_dir), what=f"output {out_dir}"):
        _remove_stale(out_dir)
        yield from _staged(out_dir)


def _staged(out_dir: Path) -> Iterator[Path]:
    stage = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    stage.mkdir()
    try:
        yield stage
        _open_writers.pop(stage, None)  # the stage closed its writers
        if not (stage / SUCCESS).is_file():
            raise RuntimeError(f"{stage}: stage finished without writing {SUCCESS}")
        for f in stage.iterdir():  # data must be on disk before the rename makes it visible
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
            os.replace(out_dir, old)
            os.replace(stage, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(stage, out_dir)
        _fsync_dir(out_dir.parent)
    except BaseException:
        _abandon_writers(stage)
        shutil.rmtree(stage, ignore_errors=True)
        raise


@contextlib.contextmanager
def work_dir(out_dir: str | os.PathLike, run_id: str) -> Iterator[Path]:
    """The work directory of a stage run as tasks that writes `out_dir`: `.NAME.work/<run_id>`.
    It survives a crash, so a rerun with the same `run_id` reuses the tasks that finished; other
    run ids' leftovers are removed. Use it inside `staged_dir(out_dir)`: on a clean exit the whole
    work root is removed while that lock is still held, so the next run to take the lock never has
    its parts deleted under it."""
    out_dir = Path(out_dir)
    root = out_dir.parent / f".{out_dir.name}.work"
    work = root / run_id
    if root.exists():
        for old in root.iterdir():
            if old.name != run_id:
                shutil.rmtree(old, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    yield work
    shutil.rmtree(root, ignore_errors=True)

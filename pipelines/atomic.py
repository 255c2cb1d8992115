"""Crash-safe outputs: a stage writes into a hidden staging directory and only renames it to its
final name after everything, `_SUCCESS.json` last, is written and fsynced. A directory under its
final name is therefore always complete; a `kill -9` leaves at most a staging directory, which
the next run deletes before redoing the work.

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


def write_json_atomic(path: str | os.PathLike, obj) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def completed(out_dir: str | os.PathLike, fp: str) -> dict | None:
    """The recorded summary if `out_dir` holds a finished run with fingerprint `fp`."""
    marker = Path(out_dir) / SUCCESS
    try:
        summary = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    return summary if summary.get("fingerprint") == fp else None


def _remove_stale(out_dir: Path) -> None:
    for stale in out_dir.parent.glob(f".{out_dir.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in out_dir.parent.glob(f".{out_dir.name}.old-*"):
        shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def staged_dir(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging directory; on a clean exit it replaces `out_dir`. The caller
    writes `_SUCCESS.json` (with `write_json_atomic`) as its last file."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(out_dir)
    stage = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    stage.mkdir()
    try:
        yield stage
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
        shutil.rmtree(stage, ignore_errors=True)
        raise

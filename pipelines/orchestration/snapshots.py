"""Which files a snapshot partition stands for: a small registry beside the data.

A Dagster partition key is only a string. When a snapshot is registered (by the inbox sensor, the
hub sensor or the main job) we write `workspace/data/_snapshots/<key>.json` with where it came
from, so any later run, in any process, resolves the key to the same files. A local snapshot's
key embeds a hash of its files (pipelines.sources), so changed files can never pass for the
registered snapshot: they arrive as a new key.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from dagster import DynamicPartitionsDefinition

from pipelines.orchestration.paths import Workspace

SNAPSHOTS = DynamicPartitionsDefinition(name="snapshots")


def _registry(ws: Workspace) -> Path:
    return ws.data / "_snapshots"


def register(ws: Workspace, snapshot, source: dict | None = None) -> Path:
    """Record `snapshot` (a pipelines.sources.Snapshot); `source` says how to resolve it again
    (for the hub: {"kind": "hub", "config": ..., "revision": ..., "max_files": ...})."""
    path = _registry(ws) / f"{snapshot.key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"snapshot": snapshot.to_dict(), "source": source or {"kind": snapshot.kind}}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def registered(ws: Workspace, key: str) -> dict | None:
    path = _registry(ws) / f"{key}.json"
    return json.loads(path.read_text()) if path.exists() else None


def resolve(ws: Workspace, key: str, inbox: str | os.PathLike | None = None):
    """The Snapshot behind partition `key`; raises ValueError naming what is missing."""
    from pipelines import sources

    record = registered(ws, key)
    if record is not None:
        snap, src = record["snapshot"], record.get("source") or {}
        if snap["kind"] == "hub":
            return sources.hub_snapshot(src["config"], revision=snap.get("revision"),
                                        max_files=src.get("max_files"))
        snapshot = sources.local_snapshot(snap["root"])
        if snapshot.key != key:
            raise ValueError(
                f"snapshot {key}: the files under {snap['root']} changed since it was registered "
                f"(they now hash to {snapshot.key}); the inbox sensor registers them as a new snapshot"
            )
        return snapshot
    inbox = Path(inbox or ws.inbox)
    if inbox.is_dir():
        for snapshot in sources.discover_local_snapshots(inbox):
            if snapshot.key == key:
                return snapshot
    raise ValueError(f"snapshot {key}: not registered under {_registry(ws)} and not in {inbox}")

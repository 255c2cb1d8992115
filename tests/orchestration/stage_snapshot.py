"""A small snapshot for the data-stage orchestration tests, cut from ../shared's docs sample
(documentation, not FineWeb): three parquet files, so the filter stage has three tasks, with
exact copies of some documents, so dedup removes something. Registered as a partition of a
workspace of its own."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

SAMPLE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "docs-sample" / "snapshot-2026-11-a"


def write_snapshot(directory: Path, docs: int = 36) -> Path:
    if not SAMPLE.is_dir():
        pytest.skip(f"docs sample not found at {SAMPLE} (CI keeps ../shared beside the repo)")
    rows = [r for f in sorted(SAMPLE.glob("*.parquet")) for r in pq.read_table(f).to_pylist()][::3][:docs]
    rows += [{**r, "id": f"copy-{i}"} for i, r in enumerate(rows[:8])]
    directory.mkdir(parents=True)
    third = len(rows) // 3
    for i in range(3):
        part = rows[i * third: (i + 1) * third if i < 2 else None]
        pq.write_table(pa.Table.from_pylist(part), directory / f"part-{i}.parquet", row_group_size=6)
    return directory


def register_snapshot(root: Path, instance, directory: Path) -> str:
    """`directory` as a snapshot partition of the workspace at `root`; its partition key."""
    from pipelines.orchestration import snapshots as registry
    from pipelines.orchestration.paths import Workspace
    from pipelines.sources import local_snapshot

    snapshot = local_snapshot(directory)
    registry.register(Workspace(root), snapshot)
    if not instance.has_dynamic_partition("snapshots", snapshot.key):
        instance.add_dynamic_partitions("snapshots", [snapshot.key])
    return snapshot.key

"""The inbox sensor: a snapshot copied into the inbox becomes exactly one partition whose data
assets are requested; the next tick adds nothing. The hub sensor, against the local hub server:
a new revision becomes exactly one partition, pinned to its commit sha."""

from __future__ import annotations

import shutil

import pytest
from dagster import build_sensor_context

from pathlib import Path

SNAPSHOT_B = Path(__file__).resolve().parents[3] / "shared" / "data" / "docs-sample" / "snapshot-2026-11-b"


def _tick(instance, workspace, name="snapshot_inbox_sensor", **resources):
    from pipelines.definitions import defs

    sensor = defs.resolve_sensor_def(name)
    ctx = build_sensor_context(instance=instance, instance_ref=instance.get_ref(),
                               resources={"workspace": workspace, **resources}, definitions=defs)
    result = sensor.evaluate_tick(ctx)
    # What the sensor daemon does with the result: apply the partition requests.
    for req in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return sensor, result


@pytest.mark.skipif(not SNAPSHOT_B.is_dir(), reason=f"{SNAPSHOT_B} missing (../shared not checked out)")
def test_inbox_sensor_adds_one_partition_then_nothing(instance, workspace_root):
    from pipelines.orchestration.resources import WorkspaceResource

    inbox = workspace_root / "inbox"
    inbox.mkdir()
    workspace = WorkspaceResource(root=str(workspace_root), inbox_settle_s=0)
    _, empty = _tick(instance, workspace)
    assert not empty.run_requests and not empty.dynamic_partitions_requests

    shutil.copytree(SNAPSHOT_B, inbox / SNAPSHOT_B.name)
    sensor, first = _tick(instance, workspace)
    partitions = instance.get_dynamic_partitions("snapshots")
    assert len(partitions) == 1 and partitions[0].startswith("snapshot-2026-11-b-")
    assert len(first.run_requests) == 1
    request = first.run_requests[0]
    assert request.partition_key == partitions[0]
    from pipelines.definitions import defs

    assert sensor.job_name == "process_snapshot"
    job = defs.resolve_job_def(sensor.job_name)
    requested = {k.to_user_string() for k in job.asset_layer.selected_asset_keys}
    assert requested == {"raw_documents", "filtered_documents", "deduplicated_documents",
                         "token_shards", "dataset_statistics"}
    # The partition resolves to the copied files (the registry records where they are).
    from pipelines.orchestration import snapshots as registry
    from pipelines.orchestration.paths import Workspace

    snap = registry.resolve(Workspace(workspace_root), partitions[0])
    assert [f.name for f in snap.files] == ["linux-doc-6.1.parquet"]

    _, second = _tick(instance, workspace)
    assert not second.run_requests and not second.dynamic_partitions_requests
    assert second.skip_message
    assert instance.get_dynamic_partitions("snapshots") == partitions


def test_inbox_sensor_waits_for_a_copy_to_settle(instance, workspace_root, tmp_path):
    from pipelines.orchestration.resources import WorkspaceResource
    from pipelines.orchestration.sensors import new_inbox_snapshots

    inbox = tmp_path / "inbox"
    (inbox / "fresh").mkdir(parents=True)
    (inbox / ".hidden").mkdir()
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"text": ["hello world"], "id": ["a"]})
    pq.write_table(table, inbox / "fresh" / "a.parquet")
    pq.write_table(table, inbox / ".hidden" / "a.parquet")
    ws = WorkspaceResource(root=str(workspace_root), inbox=str(inbox), inbox_settle_s=3600)
    ctx = build_sensor_context(instance=instance)
    assert new_inbox_snapshots(ctx, ws, ws.inbox_settle_s)[0] == []  # still "copying"
    found, _ = new_inbox_snapshots(ctx, ws, 0)
    assert [s.key.split("-")[0] for s in found] == ["fresh"]  # dot-directories are ignored


def test_hub_sensor_adds_one_partition_per_new_revision(instance, workspace_root, hub, monkeypatch):
    from hub_server import fineweb_shaped_parquet, sample_rows

    from pipelines import sources
    from pipelines.orchestration import snapshots as registry
    from pipelines.orchestration.paths import Workspace
    from pipelines.orchestration.resources import WorkspaceResource
    from pipelines.orchestration.sensors import HubWatch

    workspace, watch = WorkspaceResource(root=str(workspace_root)), HubWatch(configs=["sample-10BT"], max_files=1)
    first = hub.repo.at("main").sha

    def tick():
        before = set(instance.get_dynamic_partitions("snapshots"))
        _, result = _tick(instance, workspace, "fineweb_hub_sensor", hub=watch)
        return result, set(instance.get_dynamic_partitions("snapshots")) - before

    result, added = tick()
    assert added == {f"sample-10BT@{first[:12]}"}
    assert [r.partition_key for r in result.run_requests] == [f"sample-10BT@{first[:12]}"]
    result, added = tick()
    assert not added and not result.run_requests and "no new revision" in result.skip_message

    name = "sample/10BT/000_00000.parquet"
    second = hub.repo.commit({name: fineweb_shaped_parquet(sample_rows(12, 300))})
    result, added = tick()
    assert added == {f"sample-10BT@{second[:12]}"} and len(result.run_requests) == 1
    assert not tick()[1]

    # Each partition resolves to its own revision's files, downloaded from the hub.
    ws = Workspace(workspace_root)
    old, new = (registry.resolve(ws, f"sample-10BT@{sha[:12]}") for sha in (first, second))
    assert (old.revision, new.revision) == (first, second)
    assert old.files[0].read_bytes() == hub.repo.at(first).files[name]
    assert new.files[0].read_bytes() == hub.repo.at(second).files[name]

    # A hub that does not answer: the tick says so and adds nothing.
    monkeypatch.setattr(sources, "HUB_RETRY_WAITS_S", ())
    hub.fault(kind="status", path="info", status=503)
    result, added = tick()
    assert not added and result.skip_message.startswith("hub unreachable: HfHubHTTPError")

"""New snapshots become partitions: the inbox sensor (on by default) and the hub sensor (off).

Drop a directory of FineWeb-schema parquet/jsonl files into the inbox (workspace/inbox by
default; a directory whose name starts with "." is ignored, so copy to `.name` and rename when
done). On its next tick the sensor registers it as a `snapshots` partition and requests the data
assets for it. A snapshot already known adds nothing; changed files get a new key (the key hashes
the files) and so become a new snapshot.
"""


import time
from pathlib import Path

from dagster import (
    ConfigurableResource,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from pipelines.orchestration import snapshots as registry
from pipelines.orchestration.jobs import process_snapshot_job
from pipelines.orchestration.resources import WorkspaceResource


class HubWatch(ConfigurableResource):
    """Which FineWeb configs or dumps the hub sensor follows (it is off until enabled in the UI).
    The hub is the one HF_ENDPOINT names (huggingface.co by default, or a mirror)."""

    configs: list[str] = ["sample-10BT"]
    max_files: int | None = 1


def _settled(directory: Path, settle_s: float) -> bool:
    """True when nothing in the directory changed for settle_s seconds (a copy has finished)."""
    if settle_s <= 0:
        return True
    newest = max((p.stat().st_mtime for p in directory.rglob("*")), default=directory.stat().st_mtime)
    return time.time() - newest >= settle_s


def new_inbox_snapshots(context, workspace: WorkspaceResource, settle_s: float):
    """Snapshots in the inbox that are not partitions yet."""
    from pipelines.sources import _data_files, local_snapshot  # noqa: PLC2701

    inbox = workspace.inbox_dir()
    if not inbox.is_dir():
        return [], f"inbox {inbox} does not exist"
    known = set(context.instance.get_dynamic_partitions(registry.SNAPSHOTS.name))
    found = []
    for d in sorted(inbox.iterdir()):
        if not d.is_dir() or d.name.startswith(".") or not _data_files(d):
            continue
        if not _settled(d, settle_s):
            context.log.info(f"{d}: still changing, waiting for the copy to finish")
            continue
        snap = local_snapshot(d)
        if snap.key not in known:
            found.append(snap)
    return found, None


@sensor(
    name="snapshot_inbox_sensor",
    job=process_snapshot_job,
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Registers each new subdirectory of the snapshot inbox as a `snapshots` partition "
    "and requests its data assets.",
)
def snapshot_inbox_sensor(context: SensorEvaluationContext, workspace: WorkspaceResource):
    snaps, why = new_inbox_snapshots(context, workspace, workspace.inbox_settle_s)
    if why:
        return SkipReason(why)
    if not snaps:
        return SkipReason("no new snapshot in the inbox")
    for snap in snaps:
        registry.register(workspace.ws(), snap)
    return SensorResult(
        run_requests=[RunRequest(partition_key=s.key, run_key=f"snapshot:{s.key}",
                                 tags={"hgpt/snapshot": s.key}) for s in snaps],
        dynamic_partitions_requests=[registry.SNAPSHOTS.build_add_request([s.key for s in snaps])],
    )


@sensor(
    name="fineweb_hub_sensor",
    job=process_snapshot_job,
    minimum_interval_seconds=6 * 3600,
    default_status=DefaultSensorStatus.STOPPED,
    description="Follows FineWeb on the Hugging Face hub: a new revision of a watched config or "
    "dump becomes a partition (files are downloaded by raw_documents). Off by default; needs network.",
)
def fineweb_hub_sensor(context: SensorEvaluationContext, workspace: WorkspaceResource, hub: HubWatch):
    from pipelines.sources import HUB_REPO, Snapshot, _one_line, _safe_name, hub_revision  # noqa: PLC2701

    known = set(context.instance.get_dynamic_partitions(registry.SNAPSHOTS.name))
    try:
        # One look at the main branch per tick (transient failures retried); the files are
        # downloaded by raw_documents, pinned to this sha.
        sha = hub_revision(HUB_REPO)
    except Exception as exc:  # offline: say so instead of failing every tick
        return SkipReason(f"hub unreachable: {_one_line(exc)}")
    snaps = []
    for config in hub.configs:
        key = f"{_safe_name(config)}@{sha[:12]}"
        if key not in known:
            snap = Snapshot(key=key, kind="hub", files=[], revision=sha)
            registry.register(workspace.ws(), snap, {"kind": "hub", "config": config,
                                                     "revision": sha, "max_files": hub.max_files})
            snaps.append(snap)
    if not snaps:
        return SkipReason(f"no new revision (hub at {sha[:12]})")
    return SensorResult(
        run_requests=[RunRequest(partition_key=s.key, run_key=f"snapshot:{s.key}") for s in snaps],
        dynamic_partitions_requests=[registry.SNAPSHOTS.build_add_request([s.key for s in snaps])],
    )

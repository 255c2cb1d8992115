"""One snapshot's data assets materialized by Dagster (a real instance) with `executor: ray` on a
real local Ray cluster (2 CPUs, 127.0.0.1, no dashboard) succeed, and their metadata (counts,
hashes, tasks) equals that of the same materialization on the local executor."""

from __future__ import annotations

import os

import pytest

from stage_snapshot import register_snapshot, write_snapshot

pytestmark = pytest.mark.slow

TASK_STAGES = ("filtered_documents", "deduplicated_documents", "token_shards", "dataset_statistics")


@pytest.fixture(scope="module")
def ray_cluster():
    try:
        import ray
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("Ray is not installed, and CI is set: the test install must include the [ray] extra")
        pytest.skip("Ray is not installed (pip install -e '.[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             object_store_memory=100 << 20, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def _materialize(root, snapshot_dir, executor: str) -> dict:
    from dagster import DagsterInstance, materialize

    from pipelines.orchestration.assets.data import DATA_ASSETS
    from pipelines.orchestration.mlflow_resource import MLflowTracking
    from pipelines.orchestration.resources import RayCluster, WorkspaceResource

    with DagsterInstance.ephemeral() as instance:
        key = register_snapshot(root, instance, snapshot_dir)
        result = materialize(
            DATA_ASSETS, instance=instance, partition_key=key,
            resources={"workspace": WorkspaceResource(root=str(root)), "mlflow": MLflowTracking(enabled=False),
                       "ray": RayCluster()},
            run_config={"ops": {"filtered_documents": {"config": {"executor": executor}},
                                "deduplicated_documents": {"config": {"executor": executor, "workers": 2}},
                                "token_shards": {"config": {"executor": executor, "shard_tokens": 4096}},
                                "dataset_statistics": {"config": {"executor": executor}}}})
    assert result.success
    assert all(c.passed for c in result.get_asset_check_evaluations())
    return {m.asset_key.to_user_string(): {k: v.value for k, v in m.metadata.items()}
            for m in (e.materialization for e in result.get_asset_materialization_events())}


def test_data_assets_on_ray_match_the_local_executor(ray_cluster, tmp_path):
    snapshot_dir = write_snapshot(tmp_path / "inbox" / "snap")
    local = _materialize(tmp_path / "ws-local", snapshot_dir, "local")
    on_ray = _materialize(tmp_path / "ws-ray", snapshot_dir, "ray")
    for stage in TASK_STAGES:
        assert (local[stage].pop("executor"), on_ray[stage].pop("executor")) == ("local", "ray")
    for meta in (*local.values(), *on_ray.values()):
        meta.pop("path")
        meta.pop("manifest", None)
        meta.pop("stats_json", None)
    assert on_ray == local
    filtered, dedup = on_ray["filtered_documents"], on_ray["deduplicated_documents"]
    assert filtered["tasks"] == 3 and dedup["tasks"] == 2
    assert filtered["documents_in"] == 44 and filtered["kept"] == dedup["documents_in"]
    assert dedup["exact_duplicates"] > 0 and len(dedup["kept_sha256"]) == 64
    assert on_ray["token_shards"]["documents"] == dedup["kept"] and len(on_ray["token_shards"]["content_hash"]) == 64
    assert on_ray["dataset_statistics"]["tasks"] > 3 and "data:image/png;base64," in on_ray["dataset_statistics"]["plots"]

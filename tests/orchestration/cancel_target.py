"""Run by test_orch_cancel.py in its own process (as a Dagster run worker would be): trains on
the workspace's `cancel-snap` shards through the real trained_checkpoint asset (Pipes +
torchrun with 2 processes) until it is cancelled.

    python tests/orchestration/cancel_target.py WORKSPACE
"""

import sys


def main(root: str) -> int:
    from dagster import AssetKey, AssetMaterialization, DagsterInstance

    from pipelines.definitions import build_definitions
    from pipelines.orchestration.configs import preset_run_config
    from pipelines.orchestration.mlflow_resource import MLflowTracking
    from pipelines.orchestration.paths import Workspace, ensure_dagster_home
    from pipelines.orchestration.pipes_launcher import TrainingLauncher
    from pipelines.orchestration.resources import WorkspaceResource

    home = ensure_dagster_home(Workspace(__import__("pathlib").Path(root)), set_env=False)
    instance = DagsterInstance.from_config(str(home))
    instance.add_dynamic_partitions("snapshots", ["cancel-snap"])
    instance.report_runless_asset_event(AssetMaterialization(
        asset_key="token_shards", partition="cancel-snap", metadata={"content_hash": "synthetic"}))
    defs = build_definitions({
        "workspace": WorkspaceResource(root=root),
        "mlflow": MLflowTracking(enabled=False),
        "launcher": TrainingLauncher(nproc_per_node=2, grace_s=10),
    })
    run_config = preset_run_config("tiny", max_steps=100_000, warmup_steps=2, seq_len=64,
                                   batch_tokens=512, micro_batch=4, eval_every=0,
                                   checkpoint_every=2, log_every=1, n_layer=1, n_embd=64, n_head=1)
    result = defs.resolve_job_def("retrain").execute_in_process(
        instance=instance, run_config=run_config, asset_selection=[AssetKey("trained_checkpoint")],
        raise_on_error=False, tags={"test": "cancel"})
    print(f"RUN {result.run_id} success={result.success}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

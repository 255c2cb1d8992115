"""The Dagster code location: every asset, check, job, schedule and sensor of the project.

    hgpt ui                                  # the UI over workspace/dagster, on 127.0.0.1:3000
    DAGSTER_HOME=$PWD/workspace/dagster dagster-webserver -w workspace.yaml -h 127.0.0.1 -p 3000
    DAGSTER_HOME=$PWD/workspace/dagster dagster-daemon run -w workspace.yaml   # what hgpt ui runs
    dagster definitions validate -w workspace.yaml

Every asset's checks (check_specs) are evaluated with its materialization: raw_documents (has
documents, text column), the data stages' conservation and shard checks, trained_checkpoint
(finite final loss, checkpoint verifies), evaluation (beats the unigram baseline) and samples.
"""

from __future__ import annotations

import os

from dagster import Definitions, multiprocess_executor

from pipelines.orchestration.assets import ALL_ASSETS
from pipelines.orchestration.assets.data import fanned_out_data_assets
from pipelines.orchestration.assets.fanout import IO_MANAGER as TASK_IO, TaskIOManager
from pipelines.orchestration.assets.training import EVALUATION_ASSETS, TRAINING_ASSETS
from pipelines.orchestration.jobs import (
    process_snapshot_job,
    retrain_gpt2_job,
    retrain_job,
    retrain_on_new_shards,
    weekly_retraining,
)
from pipelines.orchestration.mlflow_resource import MLflowTracking
from pipelines.orchestration.pipes_launcher import TrainingLauncher
from pipelines.orchestration.resources import RayCluster, WorkspaceResource
from pipelines.orchestration.sensors import HubWatch, fineweb_hub_sensor, snapshot_inbox_sensor


def build_definitions(resources: dict | None = None, executor=None, fanout: bool = False) -> Definitions:
    """The project's Definitions; tests pass their own resources (temporary workspace, MLflow),
    a cluster deployment its executor (e.g. dagster_k8s.k8s_job_executor; see
    pipelines/orchestration/SCALE_OUT.md) and `fanout`: the data stages that run as tasks (filter,
    dedup, tokenize, statistics) as graphs whose steps run those tasks (the same assets to the
    user), so they run as separate steps (separate pods under the k8s executor) instead of
    inside the asset's one step."""
    assets = [*fanned_out_data_assets(), *TRAINING_ASSETS, *EVALUATION_ASSETS] if fanout else ALL_ASSETS
    return Definitions(
        assets=assets,
        jobs=[process_snapshot_job, retrain_job, retrain_gpt2_job],
        schedules=[weekly_retraining],
        sensors=[snapshot_inbox_sensor, fineweb_hub_sensor, retrain_on_new_shards],
        resources={
            "workspace": WorkspaceResource(),
            "mlflow": MLflowTracking(),
            "launcher": TrainingLauncher(),
            "hub": HubWatch(),
            "ray": RayCluster(),
            TASK_IO: TaskIOManager(),
            **(resources or {}),
        },
        # Snapshot partitions run side by side; `gpu`-pool steps (training, evaluation) one at a time.
        executor=executor or multiprocess_executor.configured({"max_concurrent": 2}),
    )


# HGPT_STAGE_FANOUT=1: this code location with the fan-out (e.g. `hgpt ui` on a big machine).
defs = build_definitions(fanout=os.environ.get("HGPT_STAGE_FANOUT") == "1")

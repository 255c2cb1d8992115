"""Jobs, the retraining schedule and the automation sensor: the two ways to retrain.

* `weekly_retraining` (schedule, stopped until turned on): every Monday 03:00 runs `retrain`.
* `retrain_on_new_shards` (automation sensor, stopped until turned on): trains as soon as some
  snapshot's token_shards were materialized after the last training ("new shards since the last
  training"), then evaluates and samples.
Turn on the one you want under Automation in the Dagster UI.
"""

from __future__ import annotations

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    ScheduleDefinition,
    define_asset_job,
)

from pipelines.orchestration.assets.data import DATA_ASSETS
from pipelines.orchestration.assets.training import EVALUATION_ASSETS, TRAINING_ASSETS
from pipelines.orchestration.configs import preset_run_config

DATA = AssetSelection.assets(*DATA_ASSETS)
TRAIN_AND_EVAL = AssetSelection.assets(*TRAINING_ASSETS, *EVALUATION_ASSETS)

process_snapshot_job = define_asset_job(
    "process_snapshot", selection=DATA,
    description="Filter, deduplicate, tokenize and describe one snapshot.",
)
retrain_job = define_asset_job(
    "retrain", selection=TRAIN_AND_EVAL, config=preset_run_config("tiny"),
    description="Train (tiny preset: 2-core CPU, minutes), evaluate and sample.",
)
retrain_gpt2_job = define_asset_job(
    "retrain_gpt2", selection=TRAIN_AND_EVAL, config=preset_run_config("gpt2"),
    tags={"hgpt/preset": "gpt2"},
    description="GPT-2 124M reproduction (needs GPUs: set the launcher's nproc_per_node).",
)

weekly_retraining = ScheduleDefinition(
    name="weekly_retraining",
    job=retrain_job,
    cron_schedule="0 3 * * 1",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.STOPPED,
    description="Retrain on all materialized snapshots every Monday at 03:00 UTC.",
)

retrain_on_new_shards = AutomationConditionSensorDefinition(
    "retrain_on_new_shards",
    target=TRAIN_AND_EVAL,
    default_status=DefaultSensorStatus.STOPPED,
    minimum_interval_seconds=60,
    description="Evaluates trained_checkpoint's condition 'new shards since the last training' "
    "(then evaluation and samples follow eagerly).",
)

"""The main job (`hgpt run`) end to end in a fresh workspace, shortened to a few training steps:
killed with kill -9 during training, rerun to completion, then rerun again without adding
anything. Checks what a user would look at: the Dagster instance, the MLflow store, the output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
ARGS = ["--max-steps", "4", "--default-max-chars", "500000"]
ASSETS = {"raw_documents", "filtered_documents", "deduplicated_documents", "token_shards",
          "dataset_statistics", "trained_checkpoint", "evaluation", "samples"}


def _cmd(root: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.orchestration.cli", "run", "--workspace", str(root), *ARGS, *extra]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "DAGSTER_HOME")}
    return {**env, "PYTHONUNBUFFERED": "1"}


def _run(root: Path) -> str:
    proc = subprocess.run(_cmd(root), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout


def _state(root: Path):
    from dagster import DagsterInstance
    from mlflow import MlflowClient

    with DagsterInstance.from_config(str(root / "dagster")) as instance:
        runs = instance.get_runs()
        materialized = {k.to_user_string() for k in instance.get_asset_keys()
                        if instance.get_latest_materialization_event(k) is not None}
        statuses = {r.run_id: r.status.value for r in runs}
    client = MlflowClient(f"sqlite:///{root}/mlflow/mlflow.db")
    # training (with evaluation and samples) and the data stages, each in its experiment
    exps = [client.get_experiment_by_name(n).experiment_id for n in ("homebrew-gpt2", "homebrew-gpt2-data")]
    mruns = client.search_runs(exps, max_results=500)
    versions = client.search_model_versions("name = 'homebrew-gpt2'")
    return statuses, materialized, mruns, versions


def test_main_job_survives_kill_9_and_reruns_without_duplicates(tmp_path):
    root = tmp_path / "ws"
    # 1. Fresh workspace; kill -9 the main job once training has started.
    log = open(tmp_path / "killed.log", "w")
    proc = subprocess.Popen(_cmd(root), cwd=REPO, env=_env(), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and not list((root / "runs").glob("train-*/dagster_spec.json")):
        assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-4000:]
        time.sleep(0.5)
    time.sleep(3)  # let torchrun start its worker
    descendants = psutil.Process(proc.pid).children(recursive=True)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    gone, alive = psutil.wait_procs(descendants, timeout=30)
    assert not alive, f"training outlived the killed main job: {alive}"

    # 2. Rerun: the interrupted run is marked failed, the job finishes.
    out = _run(root)
    assert "marked 1 interrupted run(s) as failed" in out
    assert "data assets up to date" in out
    assert "Open the Dagster UI" in out and "-h 127.0.0.1" in out
    assert "mlflow ui --backend-store-uri sqlite:///" in out and "127.0.0.1" in out
    statuses, materialized, mruns, versions = _state(root)
    assert materialized == ASSETS
    assert "STARTED" not in statuses.values() and "FAILURE" in statuses.values()
    assert {r.info.status for r in mruns} <= {"FINISHED", "KILLED", "FAILED"}
    finished = [r for r in mruns if r.info.status == "FINISHED"]
    assert {r.data.tags["dagster.asset_key"] for r in finished} == ASSETS
    for r in finished:
        assert r.data.tags["dagster.run_id"] in statuses
    assert len(versions) == 1
    train = next(r for r in finished if r.data.tags["dagster.asset_key"] == "trained_checkpoint")
    assert "loss" in train.data.metrics
    assert any(a.path.startswith("checkpoints/step_") for a in
               __import__("mlflow").MlflowClient(f"sqlite:///{root}/mlflow/mlflow.db").list_artifacts(
                   train.info.run_id, "checkpoints"))

    # 3. Rerun again: everything up to date, history neither duplicated nor lost.
    out = _run(root)
    assert "data assets up to date" in out and "training up to date" in out
    assert _state(root)[0] == statuses
    statuses2, materialized2, mruns2, versions2 = _state(root)
    assert materialized2 == ASSETS
    assert sorted(r.info.run_id for r in mruns2) == sorted(r.info.run_id for r in mruns)
    assert len(versions2) == 1

"""`hgpt run --source hub` end to end against the local hub server (tests/hub_server.py), through
huggingface_hub with nothing stubbed: a file whose bytes do not match is refused (exit 2, one
line naming it); then, with a transient 500 and 503 and a connection cut mid-file on the way,
the run completes, pinned to the commit sha the hub's main branch had, and records that sha in
the partition key, the Dagster metadata and MLflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
FILE = "sample/10BT/000_00000.parquet"


def _hgpt_run(root: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "hgpt.cli", "run", "--workspace", str(root), "--source", "hub",
           "--hub-config", "sample-10BT", "--hub-max-files", "1", "--max-steps", "4"]
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "DAGSTER_HOME")}
    return subprocess.run(cmd, cwd=REPO, env={**env, "PYTHONUNBUFFERED": "1"}, capture_output=True,
                          text=True, timeout=900)


def test_hgpt_run_from_the_hub_is_pinned_and_recorded(hub, tmp_path):
    from dagster import AssetKey, DagsterInstance
    from mlflow import MlflowClient

    root, sha = tmp_path / "ws", hub.repo.at("main").sha
    key = f"sample-10BT@{sha[:12]}"

    hub.fault(kind="corrupt", path=FILE)
    refused = _hgpt_run(root)
    assert refused.returncode == 2, refused.stdout[-3000:] + refused.stderr[-3000:]
    # MLflow's store logs its creation on stderr; the error is one line, no traceback.
    error = [line for line in refused.stderr.splitlines() if line.startswith("hgpt run: error: ")]
    assert len(error) == 1 and FILE in error[0] and "sha256" in error[0], refused.stderr
    assert "Traceback" not in refused.stderr

    hub.fault(kind="status", path="info", status=500)
    hub.fault(kind="status", path=FILE, status=503)
    hub.fault(kind="drop", path=FILE, after_bytes=30_000)
    done = _hgpt_run(root)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert f"snapshot partition: {key}" in done.stdout
    gets = [(r["range"], r["status"]) for r in hub.requests("GET", contains=FILE)]
    # refused, 503, cut off, whole again (the cut fell inside huggingface_hub's first 10 MB chunk)
    assert gets == [(None, 200), (None, 503), (None, 200), (None, 200)]
    assert all(f"/resolve/{sha}/" in r["path"] for r in hub.requests(contains="/resolve/"))

    with DagsterInstance.from_config(str(root / "dagster")) as instance:
        assert instance.get_dynamic_partitions("snapshots") == [key]
        record = instance.get_latest_materialization_event(AssetKey("raw_documents")).asset_materialization
        assert record.partition == key and record.metadata["revision"].value == sha
        assert record.metadata["kind"].value == "hub"
        assert instance.get_latest_materialization_event(AssetKey("samples")) is not None
    client = MlflowClient(f"sqlite:///{root}/mlflow/mlflow.db")
    exp = client.get_experiment_by_name("homebrew-gpt2-data")  # the data stages' experiment
    raw = [r for r in client.search_runs([exp.experiment_id]) if r.data.params.get("snapshot_key") == key]
    assert len(raw) == 1 and raw[0].data.params["revision"] == sha and raw[0].data.params["kind"] == "hub"
    registered = json.loads((root / "data" / "_snapshots" / f"{key}.json").read_text())
    assert registered["source"]["revision"] == sha and registered["snapshot"]["revision"] == sha

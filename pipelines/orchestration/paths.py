"""Where everything a run produces lives: one git-ignored workspace directory.

    HGPT_WORKSPACE=/big/disk/hgpt hgpt run      # default: <repo>/workspace

Layout:
    workspace/dagster/          DAGSTER_HOME: dagster.yaml + SQLite run/event/schedule storage
    workspace/mlflow/mlflow.db  MLflow tracking store (SQLite); artifacts in workspace/mlflow/artifacts
    workspace/inbox/            snapshot inbox the sensor watches (one subdirectory per snapshot)
    workspace/data/<snapshot>/  per-snapshot stage outputs (filtered, dedup, shards, stats)
    workspace/data/dedup-index  the cross-snapshot dedup index
    workspace/runs/<name>/      training run directories (checkpoints, metrics.jsonl)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV_WORKSPACE = "HGPT_WORKSPACE"
_DAGSTER_YAML_TEMPLATE = Path(__file__).with_name("dagster.yaml")


def workspace_root() -> Path:
    return Path(os.environ.get(ENV_WORKSPACE) or REPO_ROOT / "workspace").resolve()


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def default(cls) -> "Workspace":
        return cls(workspace_root())

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster"

    @property
    def mlflow_dir(self) -> Path:
        return self.root / "mlflow"

    @property
    def mlflow_tracking_uri(self) -> str:
        return f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.mlflow_dir / "artifacts"

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def dedup_index(self) -> Path:
        return self.data / "dedup-index"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def default_snapshot_dir(self) -> Path:
        return self.root / "default-snapshot"

    def snapshot_dir(self, snapshot_key: str) -> Path:
        return self.data / snapshot_key

    @property
    def main_job_lock(self) -> Path:
        """Held by `hgpt run` for the whole main job: one main job per workspace at a time."""
        return self.root / ".hgpt-run.lock"


def get_instance(ws: Workspace | None = None):
    """The workspace's Dagster instance (DAGSTER_HOME set by `ensure_dagster_home`). Its SQLite
    storage is created on first use; two processes creating it at once race on the schema
    ("table ... already exists"), so the first use takes turns under a lock in DAGSTER_HOME."""
    from dagster import DagsterInstance

    from pipelines.locking import exclusive_lock

    ws = ws or Workspace.default()
    with exclusive_lock(ws.dagster_home / ".instance.lock", what=f"Dagster instance {ws.dagster_home}",
                        wait=True):
        return DagsterInstance.get()


def ensure_dagster_home(ws: Workspace | None = None, set_env: bool = True) -> Path:
    """Create DAGSTER_HOME with our dagster.yaml (SQLite storage under it, telemetry off, the
    `gpu` pool limited to one step) and point DAGSTER_HOME at it. Idempotent; the template is
    re-copied when it changed so an upgrade of the project upgrades the instance config."""
    ws = ws or Workspace.default()
    home = ws.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    text = _DAGSTER_YAML_TEMPLATE.read_text().replace("{{DAGSTER_HOME}}", str(home))
    target = home / "dagster.yaml"
    if not target.exists() or target.read_text() != text:
        tmp = target.with_name(".dagster.yaml.tmp")
        tmp.write_text(text)
        os.replace(tmp, target)
    if set_env:
        os.environ["DAGSTER_HOME"] = str(home)
    return home

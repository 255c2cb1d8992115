"""Resources other than MLflow: where the workspace is."""


from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from pipelines.orchestration.paths import Workspace


class WorkspaceResource(ConfigurableResource):
    """The project's working directory (data, runs, inbox); default $HGPT_WORKSPACE or ./workspace."""

    root: str | None = Field(default=None, description="Workspace root; null: $HGPT_WORKSPACE or <repo>/workspace.")
    inbox: str | None = Field(default=None, description="Snapshot inbox; null: <root>/inbox.")
    inbox_settle_s: float = Field(
        default=10.0,
        description="The inbox sensor waits until a snapshot directory has not changed for this long.",
    )

    def ws(self) -> Workspace:
        return Workspace(Path(self.root).resolve()) if self.root else Workspace.default()

    def inbox_dir(self) -> Path:
        return Path(self.inbox).resolve() if self.inbox else self.ws().inbox

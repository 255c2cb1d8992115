"""Resources other than MLflow: where the workspace is, and the Ray cluster of the data stages."""


from pathlib import Path

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr

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


class RayCluster(ConfigurableResource):
    """The Ray cluster that a data stage configured with `executor: ray` runs its tasks on; a
    stage on the local executor never touches it (nor imports Ray).

    Ours rather than dagster-ray's (0.4.8 installs beside our dagster): its resources are LocalRay
    (ray.init with no address) and KubeRay ones that create a cluster through the Kubernetes API;
    none joins a running cluster by address, which is what `ray start` and a KubeRay RayCluster
    give. Every path a task reads or writes must be on storage all Ray nodes share."""

    address: str | None = Field(
        default=None, description="The cluster: 'auto' (the one `ray start` runs on this node), "
        "'ray://head:10001' (Ray Client) or 'head:6379'; null: $RAY_ADDRESS, else a local "
        "cluster started by the step on 127.0.0.1 (stopped when the step ends).")
    num_cpus: int | None = Field(
        default=None, description="CPUs of a local cluster started by the step (null: all of the "
        "machine's); a running cluster keeps its own.")

    _started: bool = PrivateAttr(default=False)

    def connect(self) -> str | None:
        """Join the cluster (once per step process) and return the address to give the stages."""
        from pipelines.executors import connect_ray

        self._started = connect_ray(self.address, self.num_cpus) or self._started
        return self.address

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        # Only a cluster this step started: one the process joined before (a test's, a caller's)
        # outlives it.
        if self._started:
            import ray

            ray.shutdown()
            self._started = False

"""A data stage's tasks as Dagster steps of their own (separate pods under the k8s executor),
behind the same asset: a graph-backed asset whose op graph is, per task list of the stage,

    plan (one step) -> tasks (a step per run of consecutive tasks: a dynamic output each) -> collect

and then `finish`, the asset's own code, which runs the stage to the end and reports it.

How the steps know the tasks without a second copy of the stage: the stage runs as tasks through
`pipelines.executors`, each task idempotent with a completion record, so the stage can be replayed
at will. A plan step runs the stage with an executor that runs the earlier task lists (whose tasks
all finished in earlier steps, so each returns its record at once) and stops the stage when it
hands over the next list: those jobs become the dynamic outputs. The stop is what a crash would
be: the staging directory is removed, the locks are released and the work directory with the
finished tasks' records stays. `finish` replays the whole stage (every task returns its record)
and so merges exactly as the in-process stage does: the output is byte-identical by construction.
A run that failed in a task step, re-executed from failure or run again, redoes only the tasks
without a record.

The steps pass JSON, never pickles (`TaskIOManager`): a task's job and its small record.

Runs side by side: task steps write only under the stage's work directory, by rename, and the
same task writes the same bytes whoever runs it; only `finish` writes the output, under the
stage's lock. A run whose work directory another run removed (its stage finished first, or was
started with other settings) fails in a task step, and runs again without redoing finished work.

    build_definitions(fanout=True)        # or HGPT_STAGE_FANOUT=1 for the default code location
"""


import importlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from dagster import (
    AssetIn,
    ConfigMapping,
    ConfigurableIOManager,
    DynamicOut,
    DynamicOutput,
    In,
    InputContext,
    Nothing,
    OpExecutionContext,
    Out,
    Output,
    OutputContext,
    graph_asset,
    op,
)
from pydantic import Field

from pipelines import atomic
from pipelines.executors import tasks_taken_over
from pipelines.orchestration.mlflow_resource import MLflowTracking
from pipelines.orchestration.paths import Workspace
from pipelines.orchestration.resources import WorkspaceResource

IO_MANAGER = "task_io"


# --- replaying a stage up to one of its task lists ----------------------------------------------

class _TasksHandedOver(BaseException):
    """The stage has handed over the task list asked for. A BaseException, as it is control flow:
    no `except Exception` of a stage may take it for the stage's own error."""

    def __init__(self, fn: Callable[[dict], dict], jobs: list[dict]):
        super().__init__(f"{len(jobs)} tasks of {fn.__qualname__}")
        self.fn, self.jobs = fn, jobs


class _Replay:
    """An executor for `tasks_taken_over`: runs the first `stop_at` task lists here, one task
    after the other (tasks that finished return their records), then stops the stage at the next."""

    def __init__(self, stop_at: int | None):
        self.stop_at, self.lists = stop_at, 0

    def map(self, fn: Callable[[dict], dict], jobs: list[dict]):
        jobs = list(jobs)
        if self.lists == self.stop_at:
            raise _TasksHandedOver(fn, jobs)
        self.lists += 1
        return map(fn, jobs)


def planned_tasks(run: Callable[[], Any], task_list: int) -> list[dict]:
    """The tasks of the stage `run`'s task list number `task_list` (0: its first), each as
    {"task": "module:function", "job": {...}}; [] when the stage finished before reaching it (its
    output was already there)."""
    try:
        with tasks_taken_over(_Replay(task_list)):
            run()
    except _TasksHandedOver as handed:
        name = f"{handed.fn.__module__}:{handed.fn.__qualname__}"
        return [{"task": name, "job": job} for job in handed.jobs]
    return []


def run_task(task: dict) -> dict:
    """One task of `planned_tasks` (idempotent: a finished one returns its record)."""
    module, name = task["task"].split(":")
    return getattr(importlib.import_module(module), name)(task["job"])


def finished(run: Callable[[], Any]) -> Any:
    """The stage's result, its task lists run here (they all finished in the task steps)."""
    with tasks_taken_over(_Replay(None)):
        return run()


# --- the JSON passed between the steps ----------------------------------------------------------

class TaskIOManager(ConfigurableIOManager):
    """Jobs and task records as JSON files, one per output, in a directory per Dagster run (runs
    side by side never share one). Under the k8s executor `root` must be shared storage."""

    root: str | None = Field(default=None, description="Where the files go; null: the workspace's "
                             "dagster/task-io.")

    def _path(self, identifier: list[str]) -> Path:
        base = Path(self.root) if self.root else Workspace.default().dagster_home / "task-io"
        return base.joinpath(*identifier).with_suffix(".json")

    def handle_output(self, context: OutputContext, obj) -> None:
        path = self._path(context.get_identifier())
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text_atomic(path, json.dumps(obj, sort_keys=True))

    def load_input(self, context: InputContext):
        return json.loads(self._path(context.upstream_output.get_identifier()).read_text())


# --- the graph-backed asset ---------------------------------------------------------------------

@dataclass(frozen=True)
class TaskStage:
    """What the fan-out needs of a data stage run as tasks. `prepare(key, config, workspace)`
    gives the stage configured for a partition (its `.run()` runs it); `report(context, config,
    mlflow, prepared, run)` calls `run` and gives (metadata, check results), as the one-step
    asset does; `task_lists` names the stage's task lists in the order the stage hands them over."""

    name: str
    short: str
    task_lists: tuple[str, ...]
    config: type
    prepare: Callable
    report: Callable
    upstream: tuple[str, ...]
    asset: dict


def fanned_out(stage: TaskStage):
    """`stage`'s asset as a graph: per task list a plan step and up to `max_task_steps` (config)
    task steps, then finish.
    Its run config is the asset's (`ops: {<name>: {config: ...}}`), handed to every plan step and
    to finish; its key, partitions, checks and upstream are the one-step asset's."""
    checks = [spec.name for spec in stage.asset.get("check_specs", [])]
    assert len(checks) <= 1, "finish yields one check result at most"
    plans, tasks = [], []
    for i, list_name in enumerate(stage.task_lists):
        plans.append(_plan_op(stage, i, list_name))
        tasks.append(op(name=f"{stage.short}_{list_name}_task", out=Out(io_manager_key=IO_MANAGER), description=f"Consecutive {list_name} tasks of {stage.name}.",
                        tags={"hgpt/fan-out": stage.name})(_task_body))
    finish = _finish_op(stage, with_check=bool(checks))
    op_names = [p.name for p in plans] + [finish.name]

    def to_ops(config: dict) -> dict:
        return {name: {"config": config} for name in op_names}

    @graph_asset(name=stage.name, ins={name: AssetIn(key=name, dagster_type=Nothing) for name in stage.upstream},
                 config=ConfigMapping(config_fn=to_ops, config_schema=stage.config.to_config_schema()),
                 **stage.asset)
    def _asset(**upstream):
        done = None
        for plan, task in zip(plans, tasks):
            done = (plan(list(upstream.values())) if done is None else plan(done)).map(task).collect()
        if not checks:
            return {"result": finish(done)}
        result, check = finish(done)
        return {"result": result, f"{stage.name}_{checks[0]}": check}

    return _asset


def _task_body(tasks: list[dict]) -> list[dict]:
    return [run_task(task) for task in tasks]


def _plan_op(stage: TaskStage, index: int, list_name: str):
    def jobs(context: OpExecutionContext, config, workspace: WorkspaceResource):
        planned = planned_tasks(stage.prepare(context.partition_key, config, workspace).run, index)
        per_step = math.ceil(len(planned) / config.max_task_steps)
        context.log.info(f"{stage.name}: {len(planned)} {list_name} tasks, up to {per_step} a step")
        for first in range(0, len(planned), per_step or 1):
            yield DynamicOutput(planned[first:first + per_step], mapping_key=f"t{first:05d}")

    spec = dict(name=f"{stage.short}_plan_{list_name}", out=DynamicOut(io_manager_key=IO_MANAGER),
                description=f"The {list_name} tasks of {stage.name} (the stage replayed up to them).")
    if index == 0:  # after the upstream assets, whose values are not passed
        @op(ins={"after": In(Nothing)}, **spec)
        def _first(context: OpExecutionContext, config: stage.config, workspace: WorkspaceResource):
            yield from jobs(context, config, workspace)
        return _first

    @op(**spec)
    def _next(context: OpExecutionContext, config: stage.config, workspace: WorkspaceResource, after: list):
        yield from jobs(context, config, workspace)
    return _next


def _finish_op(stage: TaskStage, with_check: bool):
    @op(name=f"{stage.short}_finish",
        out={"result": Out(Nothing), **({"check": Out(Nothing)} if with_check else {})},
        description=f"Merges {stage.name}'s finished tasks, as the in-process stage, and reports it.")
    def _finish(context: OpExecutionContext, config: stage.config, workspace: WorkspaceResource,
                mlflow: MLflowTracking, after: list):
        prepared = stage.prepare(context.partition_key, config, workspace)
        metadata, checks = stage.report(context, config, mlflow, prepared, lambda: finished(prepared.run))
        yield Output(None, output_name="result", metadata=metadata)
        yield from checks

    return _finish

"""Shared helpers for the orchestration tests: a private workspace, Dagster instance and MLflow
store per test module, so nothing touches the user's ./workspace."""

from __future__ import annotations

import os
import pytest


@pytest.fixture(scope="module")
def workspace_root(tmp_path_factory, request):
    root = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    old = os.environ.get("HGPT_WORKSPACE")
    os.environ["HGPT_WORKSPACE"] = str(root)
    yield root
    if old is None:
        os.environ.pop("HGPT_WORKSPACE", None)
    else:
        os.environ["HGPT_WORKSPACE"] = old


@pytest.fixture(scope="module")
def instance(workspace_root):
    """A persistent (SQLite) instance with the project's dagster.yaml, in the module's workspace."""
    from dagster import DagsterInstance

    from pipelines.orchestration.paths import Workspace, ensure_dagster_home

    home = ensure_dagster_home(Workspace(workspace_root), set_env=False)
    with DagsterInstance.from_config(str(home)) as inst:
        yield inst

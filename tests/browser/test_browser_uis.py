"""The Dagster UI and the MLflow UI in a real Chromium.

Setup (headless, once for the module): a small snapshot through the data assets, a very short
training, evaluation and samples, into a private workspace. Then:
  * `hgpt ui` (Dagster's webserver and daemon) on a free port of 127.0.0.1: open the asset graph,
    launch a materialization of `samples` from its asset page and wait until the run succeeds;
    the loss curve drawn in `trained_checkpoint`'s metadata; no "superseded" warning in its log;
  * `mlflow ui` on a free port: open the experiment, switch from the GenAI view to "Model
    training", open the training run and find its loss metric and its dataset (the snapshot);
    the LoggedModel's page lists val_loss.
"""

from __future__ import annotations

import os
import re
import sys
import time

import pytest

from browser_support import REPO, Server, browser_missing, free_port, listening_addresses

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_browser_tools_present_in_ci():
    """CI installs chromium and playwright; there a missing browser is a failure, not a skip."""
    missing = browser_missing()
    if missing and os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true but {missing}")
    if missing:
        pytest.skip(missing)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A workspace whose instance and MLflow store hold one complete (tiny) run of the graph."""
    if browser_missing():
        pytest.skip(browser_missing())
    root = tmp_path_factory.mktemp("browser-ws")
    old = os.environ.get("HGPT_WORKSPACE")
    os.environ["HGPT_WORKSPACE"] = str(root)
    try:
        from dagster import DagsterInstance

        from pipelines.definitions import build_definitions
        from pipelines.orchestration import snapshots as registry
        from pipelines.orchestration.configs import preset_run_config
        from pipelines.orchestration.default_snapshot import build_default_snapshot
        from pipelines.orchestration.mlflow_resource import MLflowTracking
        from pipelines.orchestration.paths import Workspace, ensure_dagster_home
        from pipelines.sources import local_snapshot

        ws = Workspace(root)
        snapshot = local_snapshot(build_default_snapshot(ws.inbox / "docs", max_chars=400_000))
        registry.register(ws, snapshot)
        home = ensure_dagster_home(ws, set_env=False)
        tracking = ws.mlflow_tracking_uri
        defs = build_definitions({"mlflow": MLflowTracking(tracking_uri=tracking)})
        with DagsterInstance.from_config(str(home)) as instance:
            instance.add_dynamic_partitions("snapshots", [snapshot.key])
            data = defs.resolve_job_def("process_snapshot").execute_in_process(
                instance=instance, partition_key=snapshot.key,
                run_config={"ops": {"token_shards": {"config": {"val_fraction": 0.1}}}})
            assert data.success
            run_config = preset_run_config("tiny", max_steps=6, warmup_steps=2, seq_len=64,
                                           batch_tokens=512, micro_batch=8, eval_every=3,
                                           checkpoint_every=3, eval_tokens=1024, n_layer=1,
                                           n_embd=64, n_head=1)
            run_config["ops"]["evaluation"] = {"config": {"max_tokens": 1024}}
            train = defs.resolve_job_def("retrain").execute_in_process(
                instance=instance, run_config=run_config, raise_on_error=False)
            assert train.success  # (the val-loss check may fail after 6 steps; the run succeeds)
        yield {"root": root, "home": home, "tracking": tracking}
    finally:
        if old is None:
            os.environ.pop("HGPT_WORKSPACE", None)
        else:
            os.environ["HGPT_WORKSPACE"] = old


def _env(workspace) -> dict:
    return {**os.environ, "DAGSTER_HOME": str(workspace["home"]), "HGPT_WORKSPACE": str(workspace["root"]),
            "MLFLOW_TRACKING_URI": workspace["tracking"], "PYTHONUNBUFFERED": "1"}


def _serve(workspace, name: str, args, health: str, timeout: float):
    """Start `python -m <args(port)>` on a free port, wait until `health` answers, yield the
    server; afterwards it must leave no process behind."""
    port = free_port()
    server = Server([sys.executable, "-m", *args(port)], _env(workspace),
                    workspace["root"] / f"{name}.log", f"http://127.0.0.1:{port}")
    try:
        server.wait_http(health, timeout)
        yield server
    finally:
        left = server.stop()
    assert not left, f"{name} left processes behind: {left}"


# One server of each for the module: starting Dagster takes a minute on a loaded machine.
@pytest.fixture(scope="module")
def dagster_ui(workspace):
    # `hgpt ui` itself (its module, so the test needs no installed console script)
    yield from _serve(workspace, "hgpt-ui", lambda port: [
        "pipelines.orchestration.cli", "ui", "--port", str(port), "--workspace", str(workspace["root"])],
        "/server_info", 240)


@pytest.fixture(scope="module")
def mlflow_ui(workspace):
    yield from _serve(workspace, "mlflow-ui", lambda port: [
        "mlflow", "ui", "--backend-store-uri", workspace["tracking"], "--host", "127.0.0.1",
        "--port", str(port)], "/health", 180)


def _dismiss_dagster_dialogs(page) -> None:
    # First visit: "Join the Dagster community" swallows clicks; only its Skip button closes it.
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.first.wait_for(state="visible", timeout=8_000)
        skip.first.click()
    except Exception:
        pass


def test_dagster_ui_graph_and_materialize_from_ui(page, dagster_ui, workspace):
    assert listening_addresses(dagster_ui.sid) <= {"127.0.0.1"}
    page.goto(dagster_ui.url + "/asset-groups")
    _dismiss_dagster_dialogs(page)
    for group in ("data", "training", "evaluation"):
        page.get_by_text(group, exact=True).first.wait_for(state="visible", timeout=60_000)
    page.get_by_role("button", name=re.compile("Materialize all")).wait_for(state="visible")

    # Launch a materialization of `samples` from its asset page.
    from dagster import DagsterInstance, DagsterRunStatus

    def samples_runs(instance):
        return [r for r in instance.get_runs() if r.asset_selection
                and {k.to_user_string() for k in r.asset_selection} == {"samples"}]

    with DagsterInstance.from_config(str(workspace["home"])) as instance:
        assert not samples_runs(instance)
        page.goto(dagster_ui.url + "/assets/samples")
        _dismiss_dagster_dialogs(page)
        page.locator("button").filter(has_text=re.compile(r"^\s*Materialize\s*$")).first.click()
        deadline = time.time() + 60
        while not samples_runs(instance) and time.time() < deadline:
            time.sleep(1)
        (run,) = samples_runs(instance)
        # Watch the run's own page until the UI says it succeeded.
        page.goto(f"{dagster_ui.url}/runs/{run.run_id}")
        deadline = time.time() + 300
        while time.time() < deadline:
            if page.get_by_text("Success", exact=True).count():
                break
            if page.get_by_text("Failure", exact=True).count():
                break
            time.sleep(3)
            page.reload()
        page.get_by_text("Success", exact=True).first.wait_for(state="visible", timeout=5_000)
        assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.SUCCESS


def test_mlflow_ui_shows_training_run_with_loss(page, mlflow_ui, workspace):
    from mlflow import MlflowClient

    assert listening_addresses(mlflow_ui.sid) <= {"127.0.0.1"}
    client = MlflowClient(workspace["tracking"])
    exp = client.get_experiment_by_name("homebrew-gpt2")
    (train_run,) = client.search_runs([exp.experiment_id], "tags.`dagster.asset_key` = 'trained_checkpoint'")
    page.goto(f"{mlflow_ui.url}/#/experiments/{exp.experiment_id}")
    # MLflow 3 opens experiments in its GenAI view, where a "Got it" popover covers the page;
    # the training runs live under "Model training".
    model_training = page.get_by_text("Model training", exact=True)
    model_training.first.wait_for(state="visible", timeout=60_000)
    _click_past_popovers(page, model_training.first)
    run_name = train_run.info.run_name
    page.get_by_text(run_name).first.wait_for(state="visible", timeout=60_000)
    _click_past_popovers(page, page.get_by_text(run_name).first)
    page.wait_for_url(re.compile(train_run.info.run_id), timeout=30_000)
    _click_past_popovers(page, page.get_by_text("Model metrics").first)
    page.get_by_text("loss", exact=True).first.wait_for(state="visible", timeout=60_000)
    # The chart grid fills in only the cards on screen (the others stay empty placeholders until
    # scrolled to), and the run logs a dozen metrics in name order, so val_loss's card starts
    # below the fold: find it with the grid's search box, as a user would.
    page.get_by_placeholder("Search metric charts").first.fill("val_loss")
    page.get_by_text("val_loss", exact=True).first.wait_for(state="visible", timeout=30_000)


def test_dagster_ui_draws_the_loss_curve_of_trained_checkpoint(page, dagster_ui, workspace):
    page.goto(dagster_ui.url + "/assets/trained_checkpoint")
    _dismiss_dagster_dialogs(page)
    # The overview's metadata table shows each markdown value behind a "Show markdown" link.
    row = page.locator("tr").filter(has=page.get_by_text("loss_curve", exact=True))
    row.first.wait_for(state="visible", timeout=60_000)
    row.first.get_by_text(re.compile("markdown", re.I)).first.click()
    plot = page.locator('img[alt="loss_curve"]')
    plot.first.wait_for(state="visible", timeout=30_000)
    width = plot.first.evaluate("img => img.complete ? img.naturalWidth : 0")
    assert width > 200, width  # the PNG decoded and is drawn, not a broken image
    assert page.get_by_text("Loss per step").count()
    # `hgpt ui` starts Dagster without its "superseded, use dg dev" warning
    log = (workspace["root"] / "hgpt-ui.log").read_text()
    assert "dagster_webserver" in log and "dagster._daemon" in log
    assert "superseded" not in log.lower(), log[-3000:]


def test_mlflow_ui_shows_the_dataset_and_the_models_val_loss(page, mlflow_ui, workspace):
    from mlflow import MlflowClient

    client = MlflowClient(workspace["tracking"])
    exp = client.get_experiment_by_name("homebrew-gpt2")
    (train_run,) = client.search_runs([exp.experiment_id], "tags.`dagster.asset_key` = 'trained_checkpoint'")
    (used,) = train_run.inputs.dataset_inputs
    name, digest = used.dataset.name, used.dataset.digest
    # The run page opens on its overview, whose "Datasets" row names the snapshot with its digest
    # (the shards' content hash). The name alone would prove nothing: a tag holds it as well.
    page.goto(f"{mlflow_ui.url}/#/experiments/{exp.experiment_id}/runs/{train_run.info.run_id}")
    page.get_by_text(re.compile(rf"^{re.escape(name)} \({digest}\)$")).first.wait_for(
        state="visible", timeout=60_000)

    # The LoggedModel's page: its metrics table lists val_loss and val_bpb, measured on the snapshot.
    (model,) = client.search_logged_models([exp.experiment_id])
    page.goto(f"{mlflow_ui.url}/#/experiments/{exp.experiment_id}/models/{model.model_id}")
    table = page.get_by_test_id("logged-model-details-metrics-table")
    table.wait_for(state="visible", timeout=60_000)
    # System metrics are linked to the model too; the table's search box narrows it, as a user would.
    page.get_by_placeholder("Search metrics").first.fill("val_")
    for metric in ("val_loss", "val_bpb"):
        table.get_by_text(metric, exact=True).first.wait_for(state="visible", timeout=30_000)
    assert table.get_by_text(re.compile(rf"^{re.escape(name)} \(#{digest}\)$")).count() >= 2
    assert not table.get_by_text(re.compile("^system/")).count()  # the search did narrow it


def _click_past_popovers(page, target, timeout: float = 60.0) -> None:
    """Click `target`, closing MLflow's "Got it" feature popovers first. They open a moment
    after the page renders (later still on a loaded machine) and make the rest of the page
    ignore the pointer, so a single dismissal before the click can come too early."""
    deadline = time.time() + timeout
    while True:
        got_it = page.get_by_role("button", name="Got it")
        if got_it.count():
            try:
                got_it.first.click(timeout=2_000)
            except Exception:
                pass
        try:
            target.click(timeout=3_000)
            return
        except Exception:
            if time.time() > deadline:
                raise

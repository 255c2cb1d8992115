"""Cancelling a training run ends its whole process tree, and the last checkpoint stays intact.

A Dagster run worker executes the trained_checkpoint asset (Pipes -> torchrun -> 2 workers, each
in a session of its own). Cancelling a run from the UI interrupts the run worker (SIGINT); here
the worker is cancel_target.py in its own process, and we send it that signal. Killing the run
worker outright (kill -9) must not leave training behind either.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from pipelines.orchestration.pipes_launcher import living

pytestmark = pytest.mark.slow
TARGET = Path(__file__).with_name("cancel_target.py")
REPO = Path(__file__).resolve().parents[2]


def _shards(root: Path) -> None:
    from pipelines.orchestration.paths import Workspace
    from pipelines.shard_format import write_shard

    out = Workspace(root).snapshot_dir("cancel-snap") / "shards"
    out.mkdir(parents=True)
    rng = np.random.default_rng(0)
    write_shard(out / "val_000000.bin", rng.integers(0, 50257, 20_000))
    write_shard(out / "train_000000.bin", rng.integers(0, 50257, 200_000))


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _cmdline(p: psutil.Process) -> str:
    """A process's command line, or "" once it has exited (short-lived helpers come and go)."""
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""


def _training(seen: dict[int, psutil.Process], target_pid: int) -> list[psutil.Process]:
    """The living torchrun and rank processes among those seen under the run worker."""
    return [p for p in living(seen.values()) if p.pid != target_pid and "train_entry" in _cmdline(p)]


def _mentioning(text: str) -> list[psutil.Process]:
    """Every process on the machine whose command line mentions `text` (our workspace)."""
    found = []
    for p in psutil.process_iter(["cmdline", "pid"]):
        try:
            if p.info["pid"] != os.getpid() and text in " ".join(p.info["cmdline"] or []):
                found.append(p)
        except psutil.Error:
            pass
    return living(found)


def _start_and_wait_for_checkpoint(root: Path):
    env = {**os.environ, "HGPT_WORKSPACE": str(root), "PYTHONUNBUFFERED": "1"}
    log = open(root / "target.log", "w")
    proc = subprocess.Popen([sys.executable, str(TARGET), str(root)], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    ps = psutil.Process(proc.pid)
    seen: dict[int, psutil.Process] = {}
    deadline = time.time() + 240
    checkpoints: list[Path] = []
    while time.time() < deadline:
        for p in _tree(ps):
            seen.setdefault(p.pid, p)
        checkpoints = sorted((root / "runs").glob("train-*/checkpoints/step_*"))
        if len(checkpoints) >= 2 and len(_training(seen, proc.pid)) >= 3:  # torchrun, 2 ranks
            break
        assert proc.poll() is None, (root / "target.log").read_text()[-3000:]
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("no checkpoint within 240 s:\n" + (root / "target.log").read_text()[-3000:])
    return proc, seen, checkpoints[0].parent.parent


def _assert_all_gone(proc, seen, root: Path, t0: float) -> float:
    while time.time() - t0 < 30:
        for p in _tree(psutil.Process(proc.pid)) if proc.poll() is None else []:
            seen.setdefault(p.pid, p)
        if proc.poll() is not None and not living(seen.values()) and not _mentioning(str(root)):
            return time.time() - t0
        time.sleep(0.2)
    left = living(seen.values()) + _mentioning(str(root))
    for p in left:  # clean up before failing
        p.kill()
    proc.kill()
    pytest.fail(f"still running 30 s after the signal: {[(p.pid, p.name()) for p in left]}\n"
                + (root / "target.log").read_text()[-3000:])


def _assert_checkpoint_intact(run_dir: Path) -> None:
    from model.checkpoint import resolve_checkpoint, verify_checkpoint

    newest = resolve_checkpoint(run_dir)
    verify_checkpoint(newest)
    # resolve_checkpoint skips broken ones; the newest directory itself must be that one.
    dirs = sorted(p for p in (run_dir / "checkpoints").iterdir() if not p.name.startswith("."))
    assert newest == dirs[-1]


def test_cancelled_run_leaves_no_process_and_an_intact_checkpoint(tmp_path):
    _shards(tmp_path)
    proc, seen, run_dir = _start_and_wait_for_checkpoint(tmp_path)
    workers = _training(seen, proc.pid)
    assert len(workers) >= 3  # torchrun + 2 ranks (each rank in its own session)
    t0 = time.time()
    os.kill(proc.pid, signal.SIGINT)  # what Dagster's run termination delivers to the run worker
    took = _assert_all_gone(proc, seen, tmp_path, t0)
    assert took < 30
    _assert_checkpoint_intact(run_dir)

    from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

    instance = DagsterInstance.from_config(str(tmp_path / "dagster"))
    (run,) = instance.get_runs(RunsFilter(tags={"test": "cancel"}))
    assert run.status in (DagsterRunStatus.CANCELED, DagsterRunStatus.FAILURE)
    log = (tmp_path / "target.log").read_text()
    assert "stopping its process tree" in log


def test_killed_run_worker_takes_training_down_with_it(tmp_path):
    _shards(tmp_path)
    proc, seen, run_dir = _start_and_wait_for_checkpoint(tmp_path)
    t0 = time.time()
    os.kill(proc.pid, signal.SIGKILL)  # no chance to clean up: PR_SET_PDEATHSIG must do it
    took = _assert_all_gone(proc, seen, tmp_path, t0)
    assert took < 30
    _assert_checkpoint_intact(run_dir)

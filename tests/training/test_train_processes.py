"""Real processes: kill -9 and exact resume, DDP under torchrun (gloo) against one process, and
cancellation by signal. Each starts Python interpreters, hence `slow`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from model.checkpoint import verify_checkpoint
from tests.training.conftest import SMALL_MODEL
from training.callbacks import read_metrics
from training.checkpointing import latest_checkpoint

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _args(data, out, *extra):
    return ["--data", str(data), "--out", str(out), "--micro-batch", "4", "--seq-len", "32",
            "--max-lr", "3e-3", "--min-lr", "3e-4", "--warmup-steps", "2", "--eval-tokens", "1024",
            "--precision", "fp32", "--device", "cpu", "--seed", "7",
            "--set", "model_overrides=" + json.dumps(SMALL_MODEL), *extra]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _python_m_training(*args):
    return [sys.executable, "-m", "training", *args]


def _torchrun(n, *args):
    """torchrun on one node, as the project starts it (training.launch: stores on loopback)."""
    return [sys.executable, "-m", "training.launch", "--nproc-per-node", str(n), "-m", "training",
            *args]


def _losses(run_dir):
    return {step: r["loss"] for step, r in read_metrics(run_dir).items()}


def _wait_for_line(proc, needle, timeout=120):
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        if needle in line:
            return line
        if time.monotonic() > deadline:
            break
    raise AssertionError(f"never saw {needle!r}")


def test_kill_9_then_resume_matches_the_uninterrupted_run_bit_for_bit(shard_dir, tmp_path):
    common = ["--max-steps", "30", "--batch-tokens", "1024", "--checkpoint-every", "3",
              "--keep-last", "2", "--eval-every", "0"]
    full = tmp_path / "full"
    subprocess.run(_python_m_training(*_args(shard_dir, full, *common)), env=_env(), check=True,
                   capture_output=True, cwd=REPO)
    run = tmp_path / "killed"
    proc = subprocess.Popen(_python_m_training(*_args(shard_dir, run, *common)), env=_env(),
                            stdout=subprocess.PIPE, text=True, cwd=REPO)
    _wait_for_line(proc, "checkpoint")  # the first checkpoint (step 3) is complete
    _wait_for_line(proc, "step  7/30 |")
    proc.kill()  # SIGKILL: no handler, no cleanup
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    resumed_from = latest_checkpoint(run)
    k = int(resumed_from.name.split("_")[1])
    assert 3 <= k < 30
    # the killed run's lock names it; a dead holder's lock is taken over, not waited on
    assert json.loads((run / ".lock").read_text())["pid"] == proc.pid
    subprocess.run(_python_m_training(*_args(shard_dir, run, *common, "--resume")), env=_env(),
                   check=True, capture_output=True, cwd=REPO)
    starts = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()
              if '"event": "start"' in l]
    assert starts[-1]["start_step"] == k and starts[-1]["resumed_from"] == str(resumed_from)
    want, got = _losses(full), _losses(run)
    assert sorted(got) == list(range(1, 31))
    # the steps the killed run did after checkpoint k were dropped: each step is logged once
    logged = [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
              if r["event"] == "step"]
    assert logged == list(range(1, 31))
    for step in range(k + 1, 31):
        assert got[step] == want[step], f"step {step}: {got[step]!r} != {want[step]!r}"
    assert json.loads((run / "result.json").read_text())["train_loss"] == want[30]


def test_ddp_two_cpu_processes_match_one_process(shard_dir, tmp_path):
    common = ["--max-steps", "20", "--batch-tokens", "256", "--checkpoint-every", "0",
              "--eval-every", "10"]
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run(_python_m_training(*_args(shard_dir, one, *common)), env=_env(), check=True,
                   capture_output=True, cwd=REPO)
    done = subprocess.run(_torchrun(2, *_args(shard_dir, two, *common)), env=_env(),
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    start = read_metrics(two, "start")[0]
    assert start["world_size"] == 2 and start["grad_accum"] == 1
    assert read_metrics(one, "start")[0]["grad_accum"] == 2
    a, b = _losses(one), _losses(two)
    assert sorted(a) == sorted(b) == list(range(1, 21))
    for step in a:
        assert abs(a[step] - b[step]) <= 1e-4, f"step {step}: {a[step]} vs {b[step]}"
    va, vb = read_metrics(one, "eval"), read_metrics(two, "eval")
    assert abs(va[20]["val_loss"] - vb[20]["val_loss"]) <= 1e-4


def _start_session(cmd, **kw):
    return subprocess.Popen(cmd, env=_env(), cwd=REPO, stdout=subprocess.PIPE, text=True,
                            start_new_session=True, **kw)


def _alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.mark.parametrize("launcher, sig", [("python", signal.SIGTERM), ("torchrun", signal.SIGINT)])
def test_signal_cancels_promptly_and_keeps_the_checkpoint(shard_dir, tmp_path, launcher, sig):
    run = tmp_path / "run"
    args = _args(shard_dir, run, "--max-steps", "100000", "--batch-tokens", "1024",
                 "--checkpoint-every", "2", "--eval-every", "0")
    cmd = _python_m_training(*args) if launcher == "python" else _torchrun(2, *args)
    proc = _start_session(cmd)
    try:
        _wait_for_line(proc, "checkpoint")
        _wait_for_line(proc, "step")
        os.kill(proc.pid, sig)  # only the direct child, as Dagster Pipes does
        proc.wait(timeout=60)
        deadline = time.monotonic() + 30
        while _alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(proc.pid), "a process of the run survived the cancellation"
    finally:
        if _alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    if launcher == "python":
        assert proc.returncode == 128 + sig
    else:
        assert proc.returncode != 0
    verify_checkpoint(latest_checkpoint(run))
    assert not (run / "result.json").exists()

"""A run directory under stress: a second run on it, a full disk while a checkpoint is written,
resumed metrics, shards changed under a checkpoint, and the exit codes `hgpt train` documents."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors import SafetensorError

import model.checkpoint as model_checkpoint
import training.checkpointing as ckpt
from hgpt.cli import main
from model.checkpoint import verify_checkpoint
from pipelines.atomic import SUCCESS
from pipelines.locking import exclusive_lock
from pipelines.shard_format import write_shard
from tests.training.conftest import SMALL_MODEL, learnable_tokens, small_config
from tests.training.test_train_processes import _args, _env, _torchrun, _wait_for_line
from training.callbacks import JsonlLogger
from training.checkpointing import latest_checkpoint, list_checkpoints
from training.loop import train

REPO = Path(__file__).resolve().parents[2]
HGPT = str(Path(sys.executable).with_name("hgpt"))


def _argv(data, out, *extra):
    return ["train", "--data", str(data), "--out", str(out), "--micro-batch", "4",
            "--seq-len", "32", "--batch-tokens", "128", "--eval-tokens", "512", "--eval-every", "0",
            "--device", "cpu", "--precision", "fp32", "--seed", "7",
            "--set", "model_overrides=" + json.dumps(SMALL_MODEL), *extra]


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def _step_records(run_dir: Path) -> list[int]:
    return [r["step"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
            if r["event"] == "step"]


# ---- one run per run directory ------------------------------------------------------------------

@pytest.mark.slow
def test_a_second_hgpt_train_on_one_out_exits_2_naming_the_holder(shard_dir, tmp_path):
    """Two real `hgpt train` processes on one --out: the second stops at once with exit code 2
    and one line naming the lock and the first's pid and host; the first's run is its own."""
    out = tmp_path / "run"
    first = subprocess.Popen([HGPT, *_argv(shard_dir, out, "--max-steps", "100000",
                                           "--checkpoint-every", "5")],
                             cwd=REPO, env=_env(), stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        _wait_for_line(first, "checkpoint")
        second = subprocess.run([HGPT, *_argv(shard_dir, out, "--max-steps", "3", "--seed", "2",
                                              "--max-lr", "0.002")],
                                cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
        assert first.poll() is None, "the first run must still be running"
        os.kill(first.pid, signal.SIGTERM)
        assert first.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    assert second.returncode == 2, second.stderr
    lines = _error_lines(second.stderr)
    assert len(lines) == 1 and "Traceback" not in second.stderr, second.stderr
    assert lines[0].startswith("hgpt train: error: training run")
    assert str(out / ".lock") in lines[0]
    assert f"pid {first.pid} on {socket.gethostname()} since " in lines[0]
    # the first run's directory holds the first run only: its config, each step once
    assert json.loads((out / "train_config.json").read_text())["seed"] == 7
    steps = _step_records(out)
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 5
    starts = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
              if r["event"] == "start"]
    assert len(starts) == 1
    verify_checkpoint(latest_checkpoint(out))


def test_a_refused_run_writes_nothing_in_the_run_directory(shard_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_argv(shard_dir, out, "--max-steps", "4", "--checkpoint-every", "2")) == 0
    (out / "checkpoints" / ".step_00000099.tmp-1").mkdir()  # a writer of this run at work
    before = _tree(out)
    capsys.readouterr()
    with exclusive_lock(out / ".lock", what="the test"):
        assert main(_argv(shard_dir, out, "--max-steps", "8", "--resume")) == 2
        # the same process holds it: flock refuses a second open file description as well
        with pytest.raises(RuntimeError, match=r"training run .* is in use by pid "):
            train(small_config(shard_dir, out, max_steps=8, resume=True))
    err = capsys.readouterr().err
    assert len(_error_lines(err)) == 1 and f"pid {os.getpid()} on" in err
    assert _tree(out) == before  # not even the metrics or the tmp directory were touched


@pytest.mark.slow
def test_under_torchrun_every_rank_stops_with_the_holders_name(shard_dir, tmp_path):
    out = tmp_path / "run"
    with exclusive_lock(out / ".lock", what="the test"):
        done = subprocess.run(_torchrun(2, *_args(shard_dir, out, "--max-steps", "5",
                                                  "--batch-tokens", "256")),
                              env=_env(), capture_output=True, text=True, cwd=REPO, timeout=180)
    assert done.returncode != 0
    refusals = [line for line in done.stderr.splitlines()
                if line.startswith("train: error: training run") and f"pid {os.getpid()}" in line]
    assert len(refusals) == 2, done.stderr[-3000:]  # rank 0 and rank 1, the same line
    assert refusals[0] == refusals[1]
    assert not (out / "metrics.jsonl").exists() and not (out / "checkpoints").exists()


# ---- a full disk during a checkpoint ------------------------------------------------------------

def _fail_optimizer_write(monkeypatch, step, exc):
    """The optimizer moments of checkpoint `step` fail half written (the earlier ones are
    written in full)."""
    real = ckpt.save_file

    def save_file(tensors, path, *a, **k):
        if path.endswith(ckpt.OPTIMIZER_TENSORS) and f".step_{step:08d}.tmp-" in path:
            Path(path).write_bytes(b"half a file")
            raise exc
        return real(tensors, path, *a, **k)

    monkeypatch.setattr(ckpt, "save_file", save_file)


@pytest.mark.parametrize("failure", [
    SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"),
    OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)),
], ids=["safetensors-enospc", "oserror-edquot"])
def test_a_full_disk_while_checkpointing_is_one_line_exit_2_then_resume(
        shard_dir, tmp_path, capsys, monkeypatch, failure):
    out = tmp_path / "run"
    argv = _argv(shard_dir, out, "--max-steps", "8", "--checkpoint-every", "4")
    _fail_optimizer_write(monkeypatch, 8, failure)
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = _error_lines(err)
    assert len(lines) == 1, err
    detail = os.strerror(errno.ENOSPC if isinstance(failure, SafetensorError) else errno.EDQUOT)
    assert lines[0] == (
        f"hgpt train: error: disk full writing checkpoint step 8 under {out / 'checkpoints'}: "
        f"{detail}; previous checkpoint step_00000004 intact; free space, then run again with "
        f"--resume")
    assert not list((out / "checkpoints").glob(".*")), "the partial checkpoint is removed"
    assert [p.name for p in list_checkpoints(out)] == ["step_00000004"]
    verify_checkpoint(out / "checkpoints" / "step_00000004")
    assert not (out / "result.json").exists()
    monkeypatch.undo()  # space freed
    assert main(argv + ["--resume"]) == 0
    assert json.loads((out / "result.json").read_text())["step"] == 8
    assert _step_records(out) == list(range(1, 9))


def test_an_io_error_is_named_as_such_and_leaves_nothing(shard_dir, tmp_path, monkeypatch):
    cfg = small_config(shard_dir, tmp_path / "run", max_steps=4, checkpoint_every=4)

    def broken(path, data):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(model_checkpoint, "_write_json_synced", broken)
    with pytest.raises(model_checkpoint.CheckpointWriteError,
                       match=r"^write error writing checkpoint step 4 under .*: Input/output error; "
                             r"no earlier checkpoint of this run; fix the disk"):
        train(cfg)
    assert not list((tmp_path / "run" / "checkpoints").glob("*")) + \
        list((tmp_path / "run" / "checkpoints").glob(".*"))


def _record_checkpoints_at_each_write(monkeypatch) -> list[list[str]]:
    seen: list[list[str]] = []
    real = ckpt.write_checkpoint

    def write_checkpoint(directory, *a, **k):
        seen.append([p.name for p in list_checkpoints(Path(directory).parents[1])])
        return real(directory, *a, **k)

    monkeypatch.setattr(ckpt, "write_checkpoint", write_checkpoint)
    return seen


def test_pruning_makes_room_before_the_write_when_that_is_safe(shard_dir, tmp_path, monkeypatch):
    seen = _record_checkpoints_at_each_write(monkeypatch)
    train(small_config(shard_dir, tmp_path / "three", max_steps=5, checkpoint_every=1,
                       keep_last=3, eval_every=0))
    # while step N is written, only keep_last - 1 = 2 others are on disk
    assert seen == [[], ["step_00000001"], ["step_00000001", "step_00000002"],
                    ["step_00000002", "step_00000003"], ["step_00000003", "step_00000004"]]
    assert [p.name for p in list_checkpoints(tmp_path / "three")] == [
        "step_00000003", "step_00000004", "step_00000005"]
    seen.clear()
    # keep_last = 1: the one kept is the newest complete checkpoint; it stays until the new
    # one is complete
    train(small_config(shard_dir, tmp_path / "one", max_steps=3, checkpoint_every=1,
                       keep_last=1, eval_every=0))
    assert seen == [[], ["step_00000001"], ["step_00000002"]]
    assert [p.name for p in list_checkpoints(tmp_path / "one")] == ["step_00000003"]


def test_pruning_first_never_removes_the_checkpoint_a_resume_continues_from(
        shard_dir, tmp_path, monkeypatch):
    cfg = small_config(shard_dir, tmp_path / "run", max_steps=4, checkpoint_every=2, keep_last=2,
                       eval_every=0)
    train(cfg)
    (list_checkpoints(cfg.out)[-1] / "model.safetensors").write_bytes(b"x")  # step 4 broken
    seen = _record_checkpoints_at_each_write(monkeypatch)
    train(cfg.replace(resume=True, max_steps=6))
    assert seen[0] == ["step_00000002", "step_00000004"]  # step 2 survives the write of step 4
    assert [p.name for p in list_checkpoints(cfg.out)] == ["step_00000004", "step_00000006"]


def test_partial_checkpoints_of_dead_writers_are_removed_when_a_run_starts(shard_dir, tmp_path):
    cfg = small_config(shard_dir, tmp_path / "run", max_steps=4, checkpoint_every=4)
    train(cfg)
    root = tmp_path / "run" / "checkpoints"
    for name in (".step_00000008.tmp-999999", ".step_00000004.old-999999"):
        (root / name).mkdir()
        (root / name / "model.safetensors").write_bytes(b"half")
    train(cfg.replace(resume=True))  # already at max_steps: no checkpoint is written
    assert sorted(p.name for p in root.iterdir()) == ["step_00000004"]


@pytest.fixture
def small_disk(tmp_path, request):
    """A small tmpfs, 720 KiB unless parametrized (a real ENOSPC; needs root and mount rights,
    skipped elsewhere). One checkpoint of SMALL_MODEL takes about 480 KiB there."""
    disk = tmp_path / "disk"
    disk.mkdir()
    size = getattr(request, "param", "720k")
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)],
                           capture_output=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mount.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def test_a_real_full_disk_then_room_for_keep_last_checkpoints_is_enough(
        shard_dir, small_disk, capsys):
    out = small_disk / "run"
    argv = _argv(shard_dir, out, "--checkpoint-every", "2", "--keep-last", "2")
    assert main(argv + ["--max-steps", "6"]) == 2  # room for one checkpoint and a half
    err = capsys.readouterr().err
    lines = _error_lines(err)
    assert len(lines) == 1 and lines[0].startswith(
        "hgpt train: error: disk full writing checkpoint step 4 under"), err
    assert "No space left on device; previous checkpoint step_00000002 intact" in lines[0]
    assert "Traceback" not in err
    assert not list((out / "checkpoints").glob(".*"))
    assert [p.name for p in list_checkpoints(out)] == ["step_00000002"]
    verify_checkpoint(out / "checkpoints" / "step_00000002")
    # room for two checkpoints, not three: enough for keep_last = 2 because the oldest goes
    # before each write
    subprocess.run(["mount", "-o", "remount,size=1200k", str(small_disk)], check=True)
    assert main(argv + ["--max-steps", "10", "--resume"]) == 0, capsys.readouterr().err
    assert [p.name for p in list_checkpoints(out)] == ["step_00000008", "step_00000010"]
    assert _step_records(out) == list(range(1, 11))




@pytest.mark.parametrize("small_disk", ["12k"], indirect=True)
def test_a_disk_full_before_any_checkpoint_names_the_file(shard_dir, small_disk, capsys):
    out = small_disk / "run"
    assert main(_argv(shard_dir, out, "--max-steps", "1000", "--checkpoint-every", "0")) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert lines == [f"hgpt train: error: [Errno 28] No space left on device: "
                     f"'{out / 'metrics.jsonl'}'"]
    assert not list(out.glob(".*.tmp-*"))

@pytest.mark.slow
def test_under_torchrun_a_full_disk_stops_every_rank_with_one_line(shard_dir, small_disk):
    """Only rank 0 writes checkpoints; the other rank stops with its message at once instead of
    waiting for it in the next collective until the timeout."""
    out = small_disk / "run"
    done = subprocess.run(_torchrun(2, *_args(shard_dir, out, "--max-steps", "6",
                                              "--batch-tokens", "256", "--checkpoint-every", "2",
                                              "--eval-every", "0")),
                          env=_env(), capture_output=True, text=True, cwd=REPO, timeout=180)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines()
             if line.startswith("train: error: disk full writing checkpoint step 4 under")]
    assert len(lines) == 2 and lines[0] == lines[1], done.stderr[-3000:]
    assert "previous checkpoint step_00000002 intact" in lines[0]
    assert not list((out / "checkpoints").glob(".*"))
    verify_checkpoint(latest_checkpoint(out))

# ---- resume: shards changed under a checkpoint, metrics of replayed steps -------------------------

def _train_to_step_4(shard_dir, tmp_path):
    cfg = small_config(shard_dir, tmp_path / "run", max_steps=4, checkpoint_every=4, eval_every=0)
    train(cfg)
    return cfg.replace(resume=True, max_steps=6)


def _same_size_other_tokens(path: Path) -> None:
    tokens = np.fromfile(path, dtype=np.uint16, offset=256 * 4)
    write_shard(path, tokens[::-1].copy())


@pytest.mark.parametrize("change, what", [
    (_same_size_other_tokens, "its contents differ"),
    (lambda p: write_shard(p, learnable_tokens(20_001, 2)), "its size changed from"),
], ids=["contents", "size"])
def test_a_resume_on_changed_shards_is_refused_naming_the_shard(
        shard_dir, tmp_path, capsys, change, what):
    resume = _train_to_step_4(shard_dir, tmp_path)
    changed = shard_dir / "train_000001.bin"
    change(changed)
    argv = _argv(shard_dir, resume.out, "--max-steps", "6", "--resume", "--batch-tokens", "256")
    assert main(argv) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1
    assert lines[0].startswith(f"hgpt train: error: {changed}: shard changed since checkpoint "
                               f"step_00000004 was written ({what}")
    assert "start a new run (another --out, or without --resume)" in lines[0]
    assert [p.name for p in list_checkpoints(resume.out)] == ["step_00000004"]


def test_the_same_shards_copied_elsewhere_resume(shard_dir, tmp_path):
    resume = _train_to_step_4(shard_dir, tmp_path)
    copy = tmp_path / "copy"
    copy.mkdir()
    for shard in shard_dir.iterdir():
        (copy / shard.name).write_bytes(shard.read_bytes())
        os.utime(copy / shard.name, (1, 1))  # other times, same bytes
    assert train(resume.replace(data=[str(copy)])).step == 6


def test_a_changed_data_stage_hash_is_refused(shard_dir, tmp_path):
    marker = shard_dir / SUCCESS
    marker.write_text(json.dumps({"fingerprint": "f", "result": {"content_hash": "aa"}}))
    resume = _train_to_step_4(shard_dir, tmp_path)
    state = json.loads((latest_checkpoint(resume.out) / ckpt.STATE_FILE).read_text())
    assert [s["stage_hash"] for s in state["data_fingerprint"]] == ["aa", "aa"]
    marker.write_text(json.dumps({"fingerprint": "g", "result": {"content_hash": "bb"}}))
    with pytest.raises(ckpt.ShardsChangedError, match=r"train_000000.bin: shard changed .*records "
                                                      r"another content hash"):
        train(resume)


def test_a_resume_drops_the_metrics_of_steps_after_its_checkpoint(shard_dir, tmp_path):
    """What a kill -9 after step 6 leaves (checkpoint 4, steps 5-6 logged, a cut line) is made
    into one record per step: the resumed run logs 5 and 6 again."""
    cfg = small_config(shard_dir, tmp_path / "run", max_steps=6, checkpoint_every=4, eval_every=0)
    train(cfg, [JsonlLogger(cfg.out, print_every=100)])
    shutil.rmtree(list_checkpoints(cfg.out)[-1])  # as if killed before checkpoint 6
    (tmp_path / "run" / "result.json").unlink()
    with open(tmp_path / "run" / "metrics.jsonl", "a") as f:
        f.write('{"event": "step", "step": 7, "lo')  # a line cut short by the kill
    train(cfg.replace(resume=True), [JsonlLogger(cfg.out, print_every=100)])
    assert _step_records(tmp_path / "run") == [1, 2, 3, 4, 5, 6]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text()
               .splitlines()]
    assert [(r["event"], r["step"]) for r in records if r["event"] != "step"] == [
        ("start", 0), ("checkpoint", 4), ("start", 4), ("eval", 6), ("checkpoint", 6),
        ("end", 6)]
    assert not list((tmp_path / "run").glob(".metrics.jsonl.tmp-*"))


# ---- exit codes -------------------------------------------------------------------------------

def test_hgpt_train_help_lists_every_exit_code():
    done = subprocess.run([HGPT, "train", "--help"], capture_output=True, text=True, timeout=120,
                          cwd=REPO)
    assert done.returncode == 0
    text = done.stdout
    section = text[text.index("Exit codes:"):].split("\n\n")[0]
    codes = [line.split()[0] for line in section.splitlines()[1:] if line[:3].strip()]
    assert codes == ["0", "1", "2", "128+N"]
    for cause in ("RUN_DIR in use by another run", "a full disk", "non-finite loss",
                  "shards changed since the checkpoint", "SIGTERM 143, SIGINT 130",
                  "torchrun itself exits 1"):
        assert cause in " ".join(section.split()), cause



def test_a_fresh_run_over_another_runs_checkpoints_is_refused(shard_dir, tmp_path, capsys):
    """Without --resume, a run directory holding checkpoints is refused (exit 2, one line): the
    old run's later checkpoints would otherwise outlive the new run's (pruning goes by step)
    and a later --resume would continue the old run. Nothing in the directory changes."""
    out = tmp_path / "run"
    assert main(_argv(shard_dir, out, "--max-steps", "4", "--checkpoint-every", "2")) == 0
    before = _tree(out)
    capsys.readouterr()
    assert main(_argv(shard_dir, out, "--max-steps", "2", "--seed", "3")) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "holds checkpoints of an earlier run" in lines[0], lines
    assert "step_00000004" in lines[0] and "--resume" in lines[0]
    assert _tree(out) == before
    assert main(_argv(shard_dir, out, "--max-steps", "6", "--resume")) == 0
    assert list_checkpoints(out)[-1].name == "step_00000006"

"""kill -9 in the middle of a run, several times at different stages: no output is ever visible
as complete unless it is, and the final rerun finishes with byte-identical output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.atomic import SUCCESS
from pipelines.shard_format import read_header
from pipeline_helpers import REPO

RUN = """
import sys
from pipelines.filtering import FilterStageConfig
from pipelines.run import PipelineConfig, run_pipeline
from pipelines.sources import local_snapshot
from pipelines.tokenize import TokenizeConfig
cfg = PipelineConfig(filter=FilterStageConfig(workers=1), tokenize=TokenizeConfig(shard_tokens=3000, workers=1))
run_pipeline(local_snapshot(sys.argv[1]), sys.argv[2], cfg)
"""


def _start(snapshot_dir: Path, root: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", RUN, str(snapshot_dir), str(root)], cwd=REPO,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the run and anything it started (its own session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # it finished before the kill point was seen
        pass
    proc.wait(timeout=30)


def _assert_nothing_partial_is_visible(root: Path) -> None:
    for run_dir in root.iterdir():
        if run_dir.name.startswith((".", "_")):
            continue
        for stage in run_dir.iterdir():
            if stage.is_dir() and not stage.name.startswith("."):
                assert (stage / SUCCESS).is_file(), f"{stage} visible without {SUCCESS}"
                for shard in stage.glob("*.bin"):
                    read_header(shard)  # complete and consistent
                json.loads((stage / SUCCESS).read_text())


def _outputs(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix in (".bin", ".parquet") and not any(x.startswith(".") for x in p.relative_to(root).parts)}


def _wait_for(root: Path, pattern: str, proc: subprocess.Popen, timeout: float = 60) -> bool:
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        if any(root.glob(pattern)):
            return True
        time.sleep(0.005)
    return False


@pytest.mark.slow
def test_kill_9_at_every_stage_then_rerun_identically(small_snapshot_dir, tmp_path):
    ref_root, root = tmp_path / "ref", tmp_path / "crash"
    ref = _start(small_snapshot_dir, ref_root)
    assert ref.wait(timeout=300) == 0
    # Kill points: while filtering, after the dedup index is written, while shards are written,
    # while statistics are written. Each run resumes from what the previous kill left behind.
    kill_points = ["*/.filtered.tmp-*/kept.parquet", "_dedup_index/*.parquet", "*/.shards.tmp-*/train_000001.bin",
                   "*/.stats.tmp-*"]
    hits = 0
    for pattern in kill_points:
        proc = _start(small_snapshot_dir, root)
        hit = _wait_for(root, pattern, proc)
        hits += hit
        _kill(proc)
        _assert_nothing_partial_is_visible(root)
    assert hits >= 3, "the kills should land mid-run"
    final = _start(small_snapshot_dir, root)
    assert final.wait(timeout=300) == 0
    _assert_nothing_partial_is_visible(root)
    assert not list(root.glob("*/.*.tmp-*")), "staging directories are cleaned up"
    ref_out, out = _outputs(ref_root), _outputs(root)
    assert ref_out.keys() == out.keys() and any(k.endswith(".bin") for k in out)
    assert all(ref_out[k] == out[k] for k in ref_out), [k for k in ref_out if ref_out[k] != out[k]]



@pytest.fixture
def small_disk(tmp_path):
    """A 200 KiB tmpfs (a real ENOSPC; needs root and mount rights, skipped elsewhere)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(disk)], capture_output=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mount.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def test_a_full_disk_ends_with_one_error_line_and_nothing_half_written(small_snapshot_dir, small_disk):
    """The run says so in one line, exit 2, with no traceback and no "Exception ignored" from a
    ParquetWriter closed again at exit; once there is room, a rerun finishes the job."""
    root = small_disk / "data"
    cmd = [str(Path(sys.executable).with_name("hgpt")), "data", "run", "--input", str(small_snapshot_dir),
           "--data-root", str(root), "--workers", "1", "--shard-tokens", "3000"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "No space left on device" in errors[0], proc.stderr
    _assert_nothing_partial_is_visible(root)
    assert not list(root.rglob(".*.tmp-*"))
    subprocess.run(["mount", "-o", "remount,size=4m", str(small_disk)], check=True)
    rerun = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    _assert_nothing_partial_is_visible(root)

"""Two writers on one data root, through `hgpt data ...` as a user runs it: they take turns or the
second stops at once (exit 2, one line naming the lock and its holder); neither ever removes the
other's staging directory, and the output equals a lone run's. Snapshots deduplicated side by
side (as Dagster runs partitions) take turns on the shared index."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.atomic import lock_path
from pipelines.locking import exclusive_lock
from pipelines.run import INDEX_DIR, snapshot_lock
from pipelines.sources import local_snapshot
from pipeline_helpers import REPO, sample_rows, write_parquet

HGPT = [str(Path(sys.executable).with_name("hgpt"))]
RUN_ARGS = ["--workers", "1", "--shard-tokens", "3000"]


def _hgpt(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([*HGPT, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)


def _finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _outputs(root: Path) -> dict[str, bytes]:
    """Every visible data file under a data root (staging directories and locks are hidden)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix in (".bin", ".parquet")
            and not any(x.startswith(".") for x in p.relative_to(root).parts)}


def _assert_one_clear_line(err: str, *needles: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("hgpt data: error:")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture
def lone_run(small_snapshot_dir, tmp_path) -> Path:
    root = tmp_path / "lone"
    rc, _, err = _finish(_hgpt("data", "run", "--input", str(small_snapshot_dir), "--data-root", str(root), *RUN_ARGS))
    assert rc == 0, err
    return root


@pytest.mark.slow
def test_two_data_runs_on_one_root_take_turns_or_the_second_stops(small_snapshot_dir, lone_run, tmp_path):
    expected = _outputs(lone_run)
    for attempt in range(2):
        root = tmp_path / f"both-{attempt}"
        procs = [_hgpt("data", "run", "--input", str(small_snapshot_dir), "--data-root", str(root), *RUN_ARGS)
                 for _ in range(2)]
        results = [_finish(p) for p in procs]
        assert sorted(rc for rc, _, _ in results)[0] == 0, results  # one of them always finishes
        for (rc, _, err), other in zip(results, reversed(procs)):
            if rc != 0:
                assert rc == 2, err
                # the holder is named unless it was just finishing (the lock is cleared first)
                line = _assert_one_clear_line(err, "in use by", ".lock")
                assert f"pid {other.pid}" in line or "another process" in line, line
        assert _outputs(root) == expected
        assert not list(root.rglob(".*.tmp-*")), "a staging directory was left behind"


def test_a_busy_snapshot_stops_the_second_run_at_once_naming_the_holder(small_snapshot_dir, lone_run, tmp_path):
    key = local_snapshot(small_snapshot_dir).key
    before = _outputs(lone_run)
    with exclusive_lock(snapshot_lock(lone_run, key), what="a test holder"):
        t0 = time.time()
        rc, _, err = _finish(_hgpt("data", "run", "--input", str(small_snapshot_dir), "--data-root", str(lone_run),
                                   *RUN_ARGS, "--limit-docs", "10"))
        waited = time.time() - t0
    assert rc == 2, err
    line = _assert_one_clear_line(err, str(snapshot_lock(lone_run, key)), f"pid {os.getpid()}", "since 20")
    assert re.search(r"on \S+ since", line), line
    assert waited < 60  # it did not wait for the holder (which never lets go while it runs)
    assert _outputs(lone_run) == before  # the first run's output is untouched


def test_a_live_writers_staging_directory_is_never_removed(small_snapshot_dir, tmp_path):
    """Another process is writing the filter stage (its lock held, its staging directory there):
    a second `hgpt data filter` on the same output stops and leaves that directory alone."""
    out = tmp_path / "data" / "filtered"
    live = out.parent / f".{out.name}.tmp-{os.getpid()}"
    live.mkdir(parents=True)
    (live / "kept.parquet").write_bytes(b"being written")
    with exclusive_lock(lock_path(out), what="a test holder"):
        rc, _, err = _finish(_hgpt("data", "filter", "--input", str(small_snapshot_dir), "--out", str(out),
                                   "--workers", "1"))
    assert rc == 2, err
    _assert_one_clear_line(err, str(lock_path(out)), f"pid {os.getpid()}")
    assert (live / "kept.parquet").read_bytes() == b"being written"
    assert not out.exists()


def test_staging_directories_of_dead_writers_are_removed(small_snapshot_dir, lone_run, tmp_path):
    root = tmp_path / "stale"
    key = local_snapshot(small_snapshot_dir).key
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    stale = [root / key / f".{stage}.tmp-{dead.stdout.strip()}" for stage in ("filtered", "shards")]
    for s in stale:
        s.mkdir(parents=True)
        (s / "kept.parquet").write_bytes(b"left by a kill -9")
    rc, _, err = _finish(_hgpt("data", "run", "--input", str(small_snapshot_dir), "--data-root", str(root), *RUN_ARGS))
    assert rc == 0, err
    assert not any(s.exists() for s in stale)
    assert _outputs(root) == _outputs(lone_run)


# --- the dedup index shared by snapshots ---------------------------------------------------------

def _filtered_snapshots(tmp_path: Path) -> dict[str, Path]:
    """Two snapshots' filtered documents that share some documents, so the order matters."""
    rows = [{**r, "source_file": "x.parquet", "source_row": i} for i, r in enumerate(sample_rows(40, step=3))]
    a, b = rows[:24], rows[12:]  # 12 documents in both
    from pipelines.filtering import KEPT_SCHEMA
    import pyarrow as pa

    out = {}
    for name, part in (("snap-a", a), ("snap-b", b)):
        path = tmp_path / "filtered" / name / "kept.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in KEPT_SCHEMA.names} for r in part],
                                            schema=KEPT_SCHEMA), path)
        out[name] = path
    return out


def _dedup(kept: Path, out: Path, index: Path, key: str) -> subprocess.Popen:
    return _hgpt("data", "dedup", "--kept", str(kept), "--out", str(out), "--index", str(index), "--key", key)


@pytest.mark.slow
def test_snapshots_deduplicated_side_by_side_equal_one_after_the_other(tmp_path):
    kept = _filtered_snapshots(tmp_path)
    sequential = {}
    for first, second in (("snap-a", "snap-b"), ("snap-b", "snap-a")):
        index = tmp_path / f"seq-{first}" / INDEX_DIR
        for key in (first, second):
            rc, out, err = _finish(_dedup(kept[key], index.parent / key, index, key))
            assert rc == 0, err
        sequential[first] = {k: json.loads((index.parent / k / "_SUCCESS.json").read_text())["result"]
                             for k in kept}
    assert sequential["snap-a"]["snap-b"]["exact_duplicates"] > 0  # the second one finds the shared ones

    for attempt in range(3):
        base = tmp_path / f"side-{attempt}"
        index = base / INDEX_DIR
        procs = {k: _dedup(kept[k], base / k, index, k) for k in kept}
        seen_orders = []
        while any(p.poll() is None for p in procs.values()):
            # A reader at any moment sees a complete list of snapshots whose index is complete.
            if (index / "order.json").exists():
                order = json.loads((index / "order.json").read_text())["order"]
                assert all((index / f"{k}.parquet").is_file() for k in order), order
                seen_orders.append(order)
            time.sleep(0.01)
        for key, p in procs.items():
            rc, _, err = _finish(p)
            assert rc == 0, (key, err)
            assert "Traceback" not in err, err
        order = json.loads((index / "order.json").read_text())["order"]
        assert sorted(order) == sorted(kept)
        results = {k: json.loads((base / k / "_SUCCESS.json").read_text())["result"] for k in kept}
        for k in kept:  # exactly what the one-after-the-other run in the recorded order gives
            got, want = results[k], sequential[order[0]][k]
            for field in ("docs_in", "kept", "exact_duplicates", "near_duplicates", "kept_sha256"):
                assert got[field] == want[field], (attempt, k, field, got, want)
        shutil.rmtree(base)

"""The data stages on a real local Ray cluster (2 CPUs, no dashboard, bound to 127.0.0.1): the
outputs of filter, dedup, tokenize and statistics are byte-identical to the local executor's and
conservation holds; a worker killed with kill -9 in the middle of a task (of filter or dedup) has
its task retried, and the output is still identical; `hgpt data run --executor ray` starts its own
cluster and runs all four stages there.

Skipped only where Ray is not installed and CI is not set (the test install, scripts/test.sh,
installs the [ray] extra); under CI a missing Ray fails."""

from __future__ import annotations

import functools
import importlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import filtering
from pipelines.dedup import DedupConfig, dedup_snapshot
from pipelines.filtering import FilterStageConfig, filter_snapshot
from pipelines.sources import ReadConfig, local_snapshot
from pipeline_helpers import REPO, doc, prose, sample_rows

pytestmark = pytest.mark.slow
READ = ReadConfig(batch_rows=5)


def _require_ray():
    try:
        import ray
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("Ray is not installed, and CI is set: the test install must include the [ray] extra "
                        "(scripts/test.sh runs scripts/setup.sh test,ray)")
        pytest.skip("Ray is not installed (pip install -e '.[ray]'; scripts/test.sh installs it)")
    return ray


@pytest.fixture(scope="module")
def ray_cluster():
    ray = _require_ray()
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             object_store_memory=100 << 20, log_to_driver=False)
    # This module's task wrapper travels by value: Ray's workers cannot import a test module.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        yield ray
    finally:
        ray.shutdown()


def _snapshot_dir(tmp_path: Path) -> Path:
    """Sample documents with exact and near copies, in parquet files of 7-row groups (read in
    batches of 5) and a jsonl file: several filter tasks per file, duplicates for dedup."""
    rng = random.Random(0)
    rows = sample_rows(45, step=3)
    copies = []
    for i, r in enumerate(rows[:12]):
        words = (r["text"] or "").split(" ")
        if i % 2 and len(words) > 60:
            words[rng.randrange(len(words))] = "changed"
        copies.append({**r, "id": f"copy-{i}", "text": " ".join(words)})
    d = tmp_path / "snap"
    d.mkdir()
    pq.write_table(pa.Table.from_pylist(rows[:30]), d / "a.parquet", row_group_size=7)
    pq.write_table(pa.Table.from_pylist(rows[30:] + copies), d / "b.parquet", row_group_size=7)
    (d / "c.jsonl").write_text("".join(json.dumps(doc(prose(10, seed=i), 500 + i)) + "\n" for i in range(4)))
    return d


def _bytes(out: Path, names=("kept.parquet", "rejected.parquet")) -> dict[str, bytes]:
    return {n: (out / n).read_bytes() for n in names}


def _outputs(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix in (".bin", ".parquet") and not p.name.startswith(".")}


def test_hgpt_data_run_on_ray_starts_its_own_cluster_and_matches_local(tmp_path):
    """The user's path: `--executor ray` with no cluster running starts a local one (before this
    module's own cluster exists), and every output of the run equals the local executor's."""
    _require_ray()
    d = _snapshot_dir(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    outs = {}
    for executor in ("local", "ray"):
        root = tmp_path / executor
        proc = subprocess.run([str(Path(sys.executable).with_name("hgpt")), "data", "run", "--input", str(d),
                               "--data-root", str(root), "--workers", "2", "--shard-tokens", "20000",
                               "--executor", executor], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        assert report["conservation"]["ok"] and report["filter"]["tasks"] > 2, report["conservation"]
        outs[executor] = _outputs(root)
    assert outs["ray"].keys() == outs["local"].keys() and any(k.endswith(".bin") for k in outs["ray"])
    assert [k for k in outs["local"] if outs["ray"][k] != outs["local"][k]] == []


def test_filter_and_dedup_on_ray_are_byte_identical_to_local(ray_cluster, tmp_path):
    snap = local_snapshot(_snapshot_dir(tmp_path))
    local = filter_snapshot(snap, tmp_path / "f-local", FilterStageConfig(read=READ, workers=1, task_rows=5))
    on_ray = filter_snapshot(snap, tmp_path / "f-ray",
                             FilterStageConfig(read=READ, workers=2, task_rows=10, executor="ray"))
    assert on_ray.tasks > 2 and on_ray.conserved and on_ray.docs_in == local.docs_in == 61
    assert (on_ray.kept, on_ray.rejected_by_rule) == (local.kept, local.rejected_by_rule)
    assert _bytes(tmp_path / "f-ray") == _bytes(tmp_path / "f-local")

    d_local = dedup_snapshot(local.kept_path, tmp_path / "d-local", cfg=DedupConfig(workers=1, tasks=1))
    d_ray = dedup_snapshot(on_ray.kept_path, tmp_path / "d-ray", cfg=DedupConfig(tasks=3, executor="ray"))
    assert d_ray.tasks == 3 and d_ray.conserved and d_ray.docs_in == on_ray.kept
    assert d_ray.exact_duplicates + d_ray.near_duplicates > 0
    assert (d_ray.exact_duplicates, d_ray.near_duplicates) == (d_local.exact_duplicates, d_local.near_duplicates)
    assert _bytes(tmp_path / "d-ray", ("kept.parquet", "duplicates.parquet")) == \
        _bytes(tmp_path / "d-local", ("kept.parquet", "duplicates.parquet"))


def test_tokenize_and_statistics_on_ray_are_byte_identical_to_local(ray_cluster, tmp_path):
    from pipelines.stats import StatsConfig, compute_statistics
    from pipelines.tokenize import TokenizeConfig, tokenize_documents

    snap = local_snapshot(_snapshot_dir(tmp_path))
    f = filter_snapshot(snap, tmp_path / "f", FilterStageConfig(read=READ, workers=1))
    d = dedup_snapshot(f.kept_path, tmp_path / "d", cfg=DedupConfig(workers=1, tasks=1))
    kept = tmp_path / "kept-small-groups.parquet"  # several row groups: several tasks per stage
    pq.write_table(pq.read_table(d.kept_path), kept, row_group_size=4)
    tok = TokenizeConfig(shard_tokens=3000, val_min_tokens=2000, shuffle_bucket_bytes=4096, workers=1, tasks=1)
    t_local = tokenize_documents(kept, tmp_path / "t-local", tok)
    t_ray = tokenize_documents(kept, tmp_path / "t-ray", replace(tok, tasks=4, executor="ray"))
    assert t_ray.tasks == 4 and t_ray.docs == d.kept and t_ray.shuffle_buckets > 1 and len(t_ray.shards) > 2
    assert _outputs(tmp_path / "t-ray") == _outputs(tmp_path / "t-local")
    args = (kept, f.rejected_path, d.duplicates_path, t_local.manifest_path)
    s_local = compute_statistics(*args, tmp_path / "s-local", "k", StatsConfig(workers=1, tasks=1))
    s_ray = compute_statistics(*args, tmp_path / "s-ray", "k", StatsConfig(tasks=3, executor="ray"))
    assert s_ray.tasks > s_local.tasks and s_ray.summary == s_local.summary
    assert s_ray.summary["kept_documents"] + s_ray.summary["duplicate_documents"] == d.docs_in
    files = lambda out: {p.name: p.read_bytes() for p in out.iterdir() if p.name != "_SUCCESS.json"}  # noqa: E731
    assert files(tmp_path / "s-ray") == files(tmp_path / "s-local")


STALLED_TASK = 1


def _stall_once(module: str, job: dict) -> dict:
    """The task `module._filter_task` (the filter stage's, or dedup's removal), except that the
    first attempt of task STALLED_TASK stops for good once its parts are written under their
    temporary names, just before renaming them, and says which process it is in (flags/pid) so
    the test can kill it there."""
    flags = Path(job["work"]).parents[1] / "flags"
    if job["task"] == STALLED_TASK:
        (flags / f"attempt-{os.getpid()}").touch()
        if not (flags / "stalled").exists():
            (flags / "stalled").touch()
            real_replace = os.replace

            def replace_then_stall(src, dst):
                if Path(src).parent.name == "parts" and ".kept.tmp-" in Path(src).name:
                    (flags / "pid").write_text(str(os.getpid()))
                    while True:
                        time.sleep(0.05)
                return real_replace(src, dst)

            os.replace = replace_then_stall
    # The worker's own module: its task is the real one.
    return importlib.import_module(module)._filter_task(job)


@pytest.mark.parametrize("stage", ["filter", "dedup"])
def test_a_worker_killed_mid_task_is_retried_and_the_output_is_identical(ray_cluster, tmp_path, monkeypatch, stage):
    import psutil

    from pipelines import dedup

    snap = local_snapshot(_snapshot_dir(tmp_path))
    cfg = FilterStageConfig(read=READ, workers=2, task_rows=10)
    filtered = filter_snapshot(snap, tmp_path / "filtered", cfg)
    if stage == "filter":
        module, names = filtering, ("kept.parquet", "rejected.parquet")
        local = filter_snapshot(snap, tmp_path / "local", cfg)
        on_ray = lambda: filter_snapshot(snap, tmp_path / "ray", replace(cfg, executor="ray"))  # noqa: E731
    else:
        module, names = dedup, ("kept.parquet", "duplicates.parquet")
        local = dedup_snapshot(filtered.kept_path, tmp_path / "local", cfg=DedupConfig(workers=1, tasks=3))
        on_ray = lambda: dedup_snapshot(filtered.kept_path, tmp_path / "ray",  # noqa: E731
                                        cfg=DedupConfig(tasks=3, executor="ray"))
    flags = tmp_path / "flags"
    flags.mkdir()
    monkeypatch.setattr(module, "_filter_task", functools.partial(_stall_once, module.__name__))
    outcome: dict = {}

    def run():
        try:
            outcome["result"] = on_ray()
        except BaseException as exc:  # reported by the test, not lost in the thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.time() + 120
    while not (flags / "pid").exists() and time.time() < deadline and thread.is_alive():
        time.sleep(0.05)
    assert (flags / "pid").exists(), outcome
    pid = int((flags / "pid").read_text())
    assert pid != os.getpid() and "ray::" in " ".join(psutil.Process(pid).cmdline())  # a Ray worker
    # Killed in the middle: the parts are written under temporary names, nothing renamed or recorded.
    work = next((tmp_path / ".ray.work").iterdir())
    assert list((work / "parts").glob(f".{STALLED_TASK:05d}.kept.tmp-{pid}"))
    assert not (work / "parts" / f"{STALLED_TASK:05d}.done.json").exists()
    os.kill(pid, signal.SIGKILL)
    thread.join(timeout=180)
    assert not thread.is_alive() and "error" not in outcome, outcome
    attempts = sorted(int(p.name.split("-")[1]) for p in flags.glob("attempt-*"))
    assert len(attempts) == 2 and pid in attempts  # the killed attempt and its retry, elsewhere
    res = outcome["result"]
    assert res.conserved and res.docs_in == local.docs_in and res.tasks == local.tasks > STALLED_TASK
    assert _bytes(tmp_path / "ray", names) == _bytes(tmp_path / "local", names)

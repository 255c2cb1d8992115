"""The statistics stage as tasks over slices of its inputs: tables, stats.json and plots are
byte-identical whatever the number of tasks and workers; the quantiles and mean made from the
tasks' sorted parts are DuckDB's own over all the values; a rerun after a crash redoes only the
unfinished tasks."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import stats
from pipelines.filtering import FilterStageConfig
from pipelines.run import PipelineConfig, run_pipeline
from pipelines.sources import local_snapshot
from pipelines.stats import QUANTILES, StatsConfig, compute_statistics
from pipelines.tokenize import TokenizeConfig
from pipeline_helpers import sample_rows


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A processed snapshot (kept, rejected and duplicate documents, several shards), its files
    rewritten in row groups of 9 rows so that every input is cut into several tasks."""
    tmp = tmp_path_factory.mktemp("stats")
    rows = sample_rows(300, step=2)
    (tmp / "snap").mkdir()
    pq.write_table(pa.Table.from_pylist(rows + [dict(r, id=r["id"] + "-copy") for r in rows[:40]]),
                   tmp / "snap" / "a.parquet")
    res = run_pipeline(local_snapshot(tmp / "snap"), tmp / "root", PipelineConfig(
        filter=FilterStageConfig(workers=1), tokenize=TokenizeConfig(shard_tokens=20_000, workers=1)))
    assert res.conservation["ok"] and res.dedup.exact_duplicates > 0 and len(res.tokenize.shards) > 2
    out = {}
    for name, path in (("kept", res.dedup.kept_path), ("rejected", res.filter.rejected_path),
                       ("dups", res.dedup.duplicates_path), ("manifest", res.tokenize.manifest_path)):
        out[name] = tmp / f"{name}.parquet"
        pq.write_table(pq.read_table(path), out[name], row_group_size=9)
    return out


def _outputs(out):
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name != "_SUCCESS.json"}


@pytest.mark.parametrize("with_dups", [True, False])
def test_outputs_are_byte_identical_whatever_the_tasks_and_workers(inputs, tmp_path, with_dups):
    args = (inputs["kept"], inputs["rejected"], inputs["dups"] if with_dups else None, inputs["manifest"])
    one = compute_statistics(*args, tmp_path / "one", "k", StatsConfig(tasks=1, workers=1))
    assert one.tasks == 3 + with_dups
    expected = _outputs(tmp_path / "one")
    assert {"stats.json", "per_dump.parquet", "top_domains.parquet", "token_length_histogram.png"} <= expected.keys()
    summary = one.summary
    assert summary["kept_documents"] == pq.ParquetFile(inputs["kept"]).metadata.num_rows
    assert summary["duplicate_documents"] == (pq.ParquetFile(inputs["dups"]).metadata.num_rows if with_dups else 0)
    for tasks, workers in [(3, 1), (0, 2)] if with_dups else [(7, 2)]:
        res = compute_statistics(*args, tmp_path / f"t{tasks}", "k", StatsConfig(tasks=tasks, workers=workers, task_rows=40))
        assert res.tasks > one.tasks + 4, res.tasks
        assert (res.fingerprint, res.summary) == (one.fingerprint, summary)
        got = _outputs(tmp_path / f"t{tasks}")
        assert [n for n in expected if got.get(n) != expected[n]] == [], (tasks, workers)
        assert not (tmp_path / f".t{tasks}.work").exists()


def test_quantiles_and_mean_from_sorted_parts_are_duckdbs_own():
    con = duckdb.connect()
    rng = np.random.default_rng(0)
    levels = ", ".join(map(str, QUANTILES))
    for trial in range(60):
        n = int(rng.integers(1, 2000))
        values = rng.integers(1, 10 ** int(rng.integers(1, 7)), n) if trial % 2 else \
            rng.random(n) * float(rng.choice([1e-3, 1.0, 1e6])) - float(rng.choice([0.0, 0.5]))
        kind = "i" if trial % 2 else "f"
        parts = np.split(values, np.sort(rng.integers(0, n + 1, int(rng.integers(0, 6)))))
        runs = [r for r in (stats._sort_keys(p) for p in parts) if len(r)]
        con.register("v", pa.table({"x": values}))
        q, avg = con.execute(f"SELECT quantile_cont(x, [{levels}]), avg(x) FROM v").fetchall()[0]
        assert stats._quantiles(con, runs, kind) == q, trial
        if kind == "i":
            assert stats._mean(con, int(values.sum()), n) == avg, trial
            assert int(stats._key_value(stats._kth(runs, 0), "i")) == values.min()


def test_a_rerun_after_a_crash_redoes_only_the_unfinished_tasks(inputs, tmp_path, monkeypatch):
    args = (inputs["kept"], inputs["rejected"], inputs["dups"], inputs["manifest"])
    cfg = StatsConfig(tasks=3, workers=1)
    ref = compute_statistics(*args, tmp_path / "ref", "k", cfg)
    real, ran = stats._slice_table, []

    def crash_in_the_fifth_task(path, *rest):
        ran.append(path)
        if len(ran) == 5:  # the second rejected slice: the manifest's three and one rejected are done
            raise KeyboardInterrupt("killed")
        return real(path, *rest)

    monkeypatch.setattr(stats, "_slice_table", crash_in_the_fifth_task)
    with pytest.raises(KeyboardInterrupt):
        compute_statistics(*args, tmp_path / "out", "k", cfg)
    assert not (tmp_path / "out").exists()
    assert len(list((tmp_path / ".out.work").glob("*/*/*.done.json"))) == 4
    ran.clear()
    monkeypatch.setattr(stats, "_slice_table", lambda path, *rest: ran.append(path) or real(path, *rest))
    res = compute_statistics(*args, tmp_path / "out", "k", cfg)
    assert len(ran) == res.tasks - 4 and res.summary == ref.summary
    assert _outputs(tmp_path / "out") == _outputs(tmp_path / "ref")


def test_bad_task_settings_are_one_line_naming_them():
    with pytest.raises(ValueError, match="executor must be one of local, ray, got 'spark'"):
        StatsConfig(executor="spark")
    with pytest.raises(ValueError, match="tasks >= 0, memory_mb >= 16"):
        StatsConfig(memory_mb=1)

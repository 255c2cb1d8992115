"""The filter stage as tasks over slices of its files: the outputs are byte-identical whatever the
number of tasks and workers, and equal to a plain read of the snapshot filtered batch by batch;
limits and unreadable files behave as in that plain read; a rerun redoes only unfinished tasks."""

from __future__ import annotations

import json
from dataclasses import replace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import filtering
from pipelines.filtering import KEPT_SCHEMA, REJECTED_SCHEMA, FilterStageConfig, filter_snapshot
from pipelines.filters import FilterConfig, apply_filters
from pipelines.sources import ReadConfig, SkippedFile, iter_documents, local_snapshot
from pipeline_helpers import doc, prose, sample_rows

READ = ReadConfig(batch_rows=5)


def _snapshot_dir(tmp_path, corrupt: bool = False):
    """Two parquet files whose row groups (7 rows) straddle read batches (5 rows), a small file
    and a jsonl file: a mix of kept and rejected documents."""
    rows = sample_rows(60, step=3)
    d = tmp_path / "snap"
    d.mkdir()
    pq.write_table(pa.Table.from_pylist(rows[:27]), d / "a.parquet", row_group_size=7, use_dictionary=False)
    pq.write_table(pa.Table.from_pylist(rows[27:50]), d / "b.parquet", row_group_size=7, use_dictionary=False)
    pq.write_table(pa.Table.from_pylist(rows[50:53]), d / "c.parquet")
    (d / "d.jsonl").write_text("".join(json.dumps(doc(prose(8, seed=i), 900 + i)) + "\n" for i in range(6)))
    if corrupt:  # wipe the text column of a.parquet's third row group: rows 14.. are unreadable
        path = d / "a.parquet"
        col = pq.ParquetFile(path).metadata.row_group(2).column(0)
        raw = bytearray(path.read_bytes())
        raw[col.data_page_offset: col.data_page_offset + col.total_compressed_size] = b"\xff" * col.total_compressed_size
        path.write_bytes(bytes(raw))
    return d


def _reference(snapshot, read: ReadConfig, out):
    """What one process reading the snapshot in order and filtering batch by batch writes."""
    cfg, skipped = FilterConfig(), []
    out.mkdir(parents=True)
    kept_w = pq.ParquetWriter(out / "kept.parquet", KEPT_SCHEMA, compression="zstd")
    rej_w = pq.ParquetWriter(out / "rejected.parquet", REJECTED_SCHEMA, compression="zstd")
    n = 0
    for docs in iter_documents(snapshot, read, skipped):
        kept, rejected = [], []
        for d in docs:
            keep, text, filt, rule, detail = apply_filters(d, cfg)
            d.pop("input_error", None)
            if keep:
                kept.append({**d, "text": text})
            else:
                text = d["text"] if isinstance(d.get("text"), (str, type(None))) else None
                rejected.append({**d, "text": text, "filter": filt, "rule": rule, "detail": detail})
        n += len(docs)
        if kept:
            kept_w.write_table(pa.Table.from_pylist(kept, schema=KEPT_SCHEMA))
        if rejected:
            rej_w.write_table(pa.Table.from_pylist(rejected, schema=REJECTED_SCHEMA))
    kept_w.close()
    rej_w.close()
    return n, [s.to_dict() for s in skipped]


def _bytes(out):
    return {name: (out / name).read_bytes() for name in ("kept.parquet", "rejected.parquet")}


@pytest.mark.parametrize("limit", [None, 31])
def test_outputs_are_byte_identical_whatever_the_tasks_and_workers(tmp_path, limit):
    snap = local_snapshot(_snapshot_dir(tmp_path))
    read = replace(READ, limit_docs=limit)
    n, _ = _reference(snap, read, tmp_path / "ref")
    expected = _bytes(tmp_path / "ref")
    tasks = set()
    for i, (workers, task_rows) in enumerate([(1, 10_000), (1, 5), (2, 10), (2, 10_000)]):
        res = filter_snapshot(snap, tmp_path / f"out{i}", FilterStageConfig(read=read, workers=workers, task_rows=task_rows))
        assert res.conserved and res.docs_in == n == (limit or 59)
        assert _bytes(tmp_path / f"out{i}") == expected, (workers, task_rows)
        assert not (tmp_path / f".out{i}.work").exists()  # the work directory goes once the output is there
        tasks.add(res.tasks)
    assert len(tasks) >= 3, tasks  # the cuts differed


@pytest.mark.parametrize("limit", [None, 20])
def test_a_file_unreadable_part_way_is_skipped_from_there_as_in_one_read(tmp_path, limit):
    snap = local_snapshot(_snapshot_dir(tmp_path, corrupt=True))
    read = replace(READ, on_error="skip", limit_docs=limit)
    n, skipped = _reference(snap, read, tmp_path / "ref")
    assert skipped and "a.parquet: unreadable at row 10" in skipped[0]["error"]  # the batch of 10..14 fails
    for i, task_rows in enumerate([10_000, 5]):
        res = filter_snapshot(snap, tmp_path / f"out{i}", FilterStageConfig(read=read, workers=1, task_rows=task_rows))
        assert res.docs_in == n and res.conserved
        assert res.skipped_files == skipped
        assert _bytes(tmp_path / f"out{i}") == _bytes(tmp_path / "ref")


def test_without_skip_the_first_unreadable_file_stops_the_stage_naming_it(tmp_path):
    from pipelines.sources import SourceError

    snap = local_snapshot(_snapshot_dir(tmp_path, corrupt=True))
    with pytest.raises(SourceError, match=r"a.parquet: unreadable at row 10"):
        filter_snapshot(snap, tmp_path / "out", FilterStageConfig(read=READ, workers=2, task_rows=5))
    assert not (tmp_path / "out").exists()


def test_a_rerun_after_a_crash_redoes_only_the_unfinished_tasks(tmp_path, monkeypatch):
    snap = local_snapshot(_snapshot_dir(tmp_path))
    cfg = FilterStageConfig(read=READ, workers=1, task_rows=5)
    real, ran = filtering._read_slice, []

    def crash_at_task_4(path, rows, read, cap=None):
        ran.append((path.name, rows))
        if len(ran) == 4:
            raise KeyboardInterrupt("killed")  # not an error the stage handles: it dies here
        return real(path, rows, read, cap)

    monkeypatch.setattr(filtering, "_read_slice", crash_at_task_4)
    with pytest.raises(KeyboardInterrupt):
        filter_snapshot(snap, tmp_path / "out", cfg)
    assert not (tmp_path / "out").exists()
    records = sorted((tmp_path / ".out.work").glob("*/parts/*.done.json"))
    assert len(records) == 3
    ran.clear()
    monkeypatch.setattr(filtering, "_read_slice", lambda *a, **k: ran.append(a[:2]) or real(*a, **k))
    res = filter_snapshot(snap, tmp_path / "out", cfg)
    assert len(ran) == res.tasks - 3  # the three finished tasks were not read again
    n, _ = _reference(snap, READ, tmp_path / "ref")
    assert res.docs_in == n and _bytes(tmp_path / "out") == _bytes(tmp_path / "ref")


def test_bad_settings_are_one_line_naming_them():
    with pytest.raises(ValueError, match="executor must be one of local, ray, got 'spark'"):
        FilterStageConfig(executor="spark")
    with pytest.raises(ValueError, match="ray_address 'auto' is set but the executor is 'local'"):
        FilterStageConfig(ray_address="auto")
    with pytest.raises(ValueError, match="task_rows must be >= 1"):
        FilterStageConfig(task_rows=0)


def test_skipped_file_records_keep_the_users_path(tmp_path):
    d = _snapshot_dir(tmp_path)
    (d / "e.parquet").write_bytes(b"PAR1 not parquet")
    res = filter_snapshot(local_snapshot(d), tmp_path / "out", FilterStageConfig(read=replace(READ, on_error="skip"), workers=1))
    assert res.skipped_files == [SkippedFile(str(d / "e.parquet"), res.skipped_files[0]["error"]).to_dict()]
    assert "e.parquet: not a readable parquet file" in res.skipped_files[0]["error"]


def test_the_pipeline_config_moves_the_task_stages_to_an_executor_without_changing_fingerprints():
    from pipelines.run import PipelineConfig

    base = PipelineConfig()
    cfg = base.on_executor("ray", "ray://head:10001")
    assert (cfg.filter.executor, cfg.filter.ray_address) == (cfg.dedup.executor, cfg.dedup.ray_address) == \
        ("ray", "ray://head:10001")
    assert cfg.dedup.output_fields() == base.dedup.output_fields()
    assert (cfg.tokenize.executor, cfg.tokenize.ray_address) == ("ray", "ray://head:10001")
    assert cfg.tokenize.output_fields() == base.tokenize.output_fields()
    assert (cfg.stats.executor, cfg.stats.ray_address) == ("ray", "ray://head:10001")
    assert cfg.stats.output_fields() == base.stats.output_fields()
    assert (cfg.filter.filters, cfg.filter.read) == (base.filter.filters, base.filter.read)

"""The tokenize stage as tasks over slices of row groups: shards and manifest are byte-identical
whatever the number of tasks and workers (and to one task); the validation split made of the
tasks' candidates is a single pass's; a rerun after a crash redoes only the unfinished tasks."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import tokenize
from pipelines.tokenize import TokenizeConfig, ValidationSplit, tokenize_documents
from pipeline_helpers import prose


def _docs_parquet(path, n=60, group=5):
    """`n` documents of varied length in row groups of `group` (12 groups: up to 12 tasks); a
    few ids repeat, across row groups, so equal hashes meet from different tasks."""
    schema = pa.schema([("text", pa.string()), ("id", pa.string()), ("source_file", pa.string())])
    ids = [f"d{i}" if i % 17 else "same" for i in range(n)]
    with pq.ParquetWriter(path, schema) as w:
        for i in range(0, n, group):
            w.write_table(pa.table({"text": [prose(2 + j % 7, seed=j) for j in range(i, i + group)],
                                    "id": ids[i : i + group], "source_file": [f"f{i // 20}.parquet"] * group},
                                   schema=schema))
    return path


def _outputs(out):
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.suffix in (".bin", ".parquet")}


# val_min_tokens above 1% of the tokens: validation is extended in hash order, across tasks
BASE = TokenizeConfig(shard_tokens=900, val_fraction=0.05, val_min_tokens=3000, shuffle_bucket_bytes=2048)


def test_outputs_are_byte_identical_whatever_the_tasks_and_workers(tmp_path):
    src = _docs_parquet(tmp_path / "docs.parquet")
    one = tokenize_documents(src, tmp_path / "one", replace(BASE, workers=1, tasks=1))
    assert one.tasks == 1 and one.shuffle_buckets >= 8 and one.val_docs > 3 and one.docs == 60
    expected = _outputs(tmp_path / "one")
    assert len([n for n in expected if n.startswith("train_")]) > 2
    for tasks, workers in [(3, 1), (12, 1), (5, 2), (0, 2)]:
        cfg = replace(BASE, workers=workers, tasks=tasks, task_rows=20)
        res = tokenize_documents(src, tmp_path / f"t{tasks}w{workers}", cfg)
        assert res.tasks == (tasks or 3), res.tasks
        assert _outputs(tmp_path / f"t{tasks}w{workers}") == expected, (tasks, workers)
        assert (res.content_hash, res.fingerprint, res.val_docs, res.tokens) == \
            (one.content_hash, one.fingerprint, one.val_docs, one.tokens)
        assert not (tmp_path / f".t{tasks}w{workers}.work").exists()


def test_the_split_made_of_parts_is_the_split_of_the_whole():
    rng = np.random.default_rng(0)
    for trial in range(30):
        n = int(rng.integers(1, 400))
        hashes = rng.integers(0, 2**64, n, dtype=np.uint64)
        hashes[rng.integers(0, n, n // 10)] = hashes[0]  # repeated ids: one hash in several parts
        lengths = rng.integers(1, 300, n)
        cfg = TokenizeConfig(val_fraction=float(rng.choice([0.0, 0.01, 0.2])),
                             val_min_tokens=int(rng.integers(0, 20_000)),
                             val_max_share=float(rng.choice([0.1, 0.5, 0.9])))
        whole = ValidationSplit(cfg)
        whole.add(hashes, lengths)
        whole.finish()
        merged = ValidationSplit(cfg)
        cuts = np.sort(rng.integers(0, n + 1, int(rng.integers(0, 6))))
        for part_h, part_n in zip(np.split(hashes, cuts), np.split(lengths, cuts)):
            part = ValidationSplit(cfg)
            part.add(part_h, part_n)
            assert len(part.held) <= max(cfg.val_min_tokens, 1) + 1  # bounded, whatever the part
            merged.absorb(part.candidates(), part.total)
        merged.finish()
        assert merged.total == whole.total == int(lengths.sum())
        assert (merged.is_val(hashes) == whole.is_val(hashes)).all(), trial


def test_a_rerun_after_a_crash_redoes_only_the_unfinished_tasks(tmp_path, monkeypatch):
    src = _docs_parquet(tmp_path / "docs.parquet")
    cfg = replace(BASE, workers=1, tasks=6)
    ref = tokenize_documents(src, tmp_path / "ref", cfg)
    real, encoded = tokenize._encode_row_group, []

    def crash_in_task_3(task):
        encoded.append(task[1])
        if len(encoded) == 7:  # the first row group of task 3 (two groups a task)
            raise KeyboardInterrupt("killed")
        return real(task)

    monkeypatch.setattr(tokenize, "_encode_row_group", crash_in_task_3)
    with pytest.raises(KeyboardInterrupt):
        tokenize_documents(src, tmp_path / "out", cfg)
    assert not (tmp_path / "out").exists()
    assert len(list((tmp_path / ".out.work").glob("*/tokens/*.done.json"))) == 3
    encoded.clear()
    monkeypatch.setattr(tokenize, "_encode_row_group", lambda task: encoded.append(task[1]) or real(task))
    res = tokenize_documents(src, tmp_path / "out", cfg)
    assert encoded == list(range(6, 12))  # tasks 3, 4 and 5 only; the merge reads no text
    assert res.content_hash == ref.content_hash and _outputs(tmp_path / "out") == _outputs(tmp_path / "ref")


def test_bad_task_settings_are_one_line_naming_them():
    with pytest.raises(ValueError, match="executor must be one of local, ray, got 'dask'"):
        TokenizeConfig(executor="dask")
    with pytest.raises(ValueError, match="task_rows must be >= 1 and tasks >= 0"):
        TokenizeConfig(tasks=-1)

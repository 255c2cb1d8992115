"""Bad input: unreadable files stop the run with an error naming file and row, or are skipped and
recorded on request; bad documents are counted rejections; the pipeline still balances."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.filtering import FilterStageConfig, filter_snapshot
from pipelines.run import PipelineConfig, run_pipeline
from pipelines.shard_format import open_tokens
from pipelines.sources import ReadConfig, SourceError, iter_documents, local_snapshot
from pipelines.tokenize import TokenizeConfig
from pipeline_helpers import doc, prose, write_parquet

GOOD = [doc(prose(20, seed=i), i) for i in range(3)]


def _cfg(on_error="raise"):
    return FilterStageConfig(read=ReadConfig(on_error=on_error), workers=1)


def _snap(tmp_path, name="snap"):
    d = tmp_path / name
    write_parquet(d / "a_good.parquet", GOOD)
    return d


def test_truncated_parquet_names_the_file(tmp_path):
    d = _snap(tmp_path)
    raw = (d / "a_good.parquet").read_bytes()
    (d / "b_truncated.parquet").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(SourceError, match="b_truncated.parquet"):
        filter_snapshot(local_snapshot(d), tmp_path / "out", _cfg())
    assert not (tmp_path / "out").exists()  # nothing half-done under the final name


def test_corrupt_data_page_names_file_and_row(tmp_path):
    d = tmp_path / "snap"
    rows = [doc(prose(5, seed=i), i) for i in range(40)]
    path = d / "corrupt.parquet"
    d.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=20, compression="zstd", use_dictionary=False)
    meta = pq.ParquetFile(path).metadata
    col = meta.row_group(1).column(0)  # the text column of the second row group
    raw = bytearray(path.read_bytes())
    start = col.data_page_offset  # wipe the whole column chunk, page header included
    raw[start : start + col.total_compressed_size] = b"\xff" * col.total_compressed_size
    path.write_bytes(bytes(raw))
    with pytest.raises(SourceError) as err:
        list(iter_documents(local_snapshot(d), ReadConfig(batch_rows=10)))
    assert "corrupt.parquet" in str(err.value) and "row 20" in str(err.value)


def test_missing_text_column_names_the_file(tmp_path):
    d = _snap(tmp_path)
    write_parquet(d / "c_notext.parquet", [{"id": "x", "body": "no text column"}])
    with pytest.raises(SourceError, match="c_notext.parquet: no 'text' column"):
        filter_snapshot(local_snapshot(d), tmp_path / "out", _cfg())


def test_skip_records_bad_files_and_processes_the_rest(tmp_path):
    d = _snap(tmp_path)
    (d / "b_garbage.parquet").write_bytes(b"PAR1 this is not parquet at all")
    write_parquet(d / "c_notext.parquet", [{"id": "x", "body": "no text"}])
    write_parquet(d / "d_good.parquet", GOOD)
    res = filter_snapshot(local_snapshot(d), tmp_path / "out", _cfg("skip"))
    assert res.docs_in == 6 and res.kept + res.rejected == 6
    assert sorted(s["file"].rsplit("/", 1)[-1] for s in res.skipped_files) == ["b_garbage.parquet", "c_notext.parquet"]
    assert all(s["error"] for s in res.skipped_files)


def test_bad_documents_are_counted_and_the_literal_is_plain_text(tmp_path):
    d = tmp_path / "snap"
    rows = [
        doc(None, 0), doc("", 1), doc("   \n\t ", 2), doc("word " * 2_100_000, 3),  # ~10 MB
        doc(prose(30, seed=7) + "\nIt ends with <|endoftext|> written out in the text.", 4),
        *[doc(prose(20, seed=10 + i), 10 + i) for i in range(3)],
    ]
    write_parquet(d / "a.parquet", rows)
    lines = [json.dumps(doc(prose(20, seed=30), 30)).encode(), b'{"text": "bad \xff\xfe utf8", "id": "u"}',
             b"{not json}", json.dumps(doc(prose(20, seed=31), 31)).encode()]
    (d / "b.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    res = run_pipeline(local_snapshot(d), tmp_path / "data",
                       PipelineConfig(filter=_cfg(), tokenize=TokenizeConfig(workers=1)))
    rules = res.filter.rejected_by_rule
    for rule in ("null_text", "empty_text", "whitespace_text", "too_long", "invalid_utf8", "invalid_json"):
        assert rules.get(f"input/{rule}") == 1, (rule, rules)
    assert res.conservation["ok"] and res.conservation["documents_in"] == 12
    rejected = pq.read_table(res.filter.rejected_path).to_pylist()
    utf8 = next(r for r in rejected if r["rule"] == "invalid_utf8")
    assert "b.jsonl:2" in utf8["detail"] and utf8["source_row"] == 1
    manifest = pq.read_table(res.tokenize.manifest_path)
    assert "doc-4" in manifest["id"].to_pylist()  # the literal <|endoftext|> page is kept...
    tokens = np.concatenate([np.asarray(open_tokens(p)) for p in res.tokenize.shards])
    assert int((tokens == 50256).sum()) == res.tokenize.docs  # ...and only separators are 50256


def test_truncated_jsonl_gz_names_file_and_row(tmp_path):
    import gzip

    d = tmp_path / "snap"
    d.mkdir()
    body = "".join(json.dumps(doc(prose(5, seed=i), i)) + "\n" for i in range(50)).encode()
    packed = gzip.compress(body)
    (d / "cut.jsonl.gz").write_bytes(packed[: len(packed) * 2 // 3])
    with pytest.raises(SourceError, match=r"cut.jsonl.gz: unreadable after row \d+"):
        list(iter_documents(local_snapshot(d)))

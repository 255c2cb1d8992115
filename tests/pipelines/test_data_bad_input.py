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


# --- one bad value in an otherwise good file, through `hgpt data run` ---------------------------

_BAD_VALUES = {  # line of b.jsonl -> (the bad row, the reason it is rejected under)
    2: ('{"text": "an id that is a number", "id": 7}', "invalid_field"),
    3: ('{"text": "a score in words", "id": "s", "language_score": "high"}', "invalid_field"),
    4: ('{"text": "a count in words", "id": "t", "token_count": "many"}', "invalid_field"),
    5: ('{"text": "a lone surrogate \\ud800 here", "id": "u"}', "invalid_unicode"),
}


def _bad_value_snapshot(tmp_path, line: int | None = None):
    """a.parquet with good documents and b.jsonl with good rows around the bad one(s)."""
    d = _snap(tmp_path)
    rows = [json.dumps(doc(prose(20, seed=40), 40))]
    rows += [bad for n, (bad, _) in sorted(_BAD_VALUES.items()) if line in (None, n)]
    rows.append(json.dumps(doc(prose(20, seed=41), 41)))
    (d / "b.jsonl").write_text("\n".join(rows) + "\n")
    return d


def _hgpt_data_run(d, root, *extra):
    import subprocess
    import sys
    from pathlib import Path

    from pipeline_helpers import REPO

    return subprocess.run([str(Path(sys.executable).with_name("hgpt")), "data", "run", "--input", str(d),
                           "--data-root", str(root), "--workers", "1", *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def test_bad_values_with_skip_are_counted_rejections_naming_file_and_row(tmp_path):
    proc = _hgpt_data_run(_bad_value_snapshot(tmp_path), tmp_path / "data", "--on-error", "skip")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    report = json.loads(proc.stdout)
    rules = report["filter"]["rejected_by_rule"]
    assert rules.get("input/invalid_field") == 3 and rules.get("input/invalid_unicode") == 1, rules
    c = report["conservation"]
    assert c["ok"] and c["documents_in"] == len(GOOD) + 2 + len(_BAD_VALUES)
    assert c["documents_in"] == c["kept"] + c["rejected"] + c["duplicates"]
    rejected = {r["source_row"]: r for r in pq.read_table(report["filter"]["rejected_path"]).to_pylist()
                if r["filter"] == "input"}
    for line, (_, reason) in _BAD_VALUES.items():
        r = rejected[line - 1]  # source_row counts from 0, lines from 1
        assert r["rule"] == reason and r["source_file"] == "b.jsonl", r
        assert f"b.jsonl:{line}:" in r["detail"], r
    assert "'id'" in rejected[1]["detail"] and "'language_score'" in rejected[2]["detail"]
    assert "'token_count'" in rejected[3]["detail"] and "'text'" in rejected[4]["detail"]


@pytest.mark.parametrize("line", sorted(_BAD_VALUES))
def test_a_bad_value_without_skip_stops_with_one_line_naming_file_and_row(tmp_path, line):
    proc = _hgpt_data_run(_bad_value_snapshot(tmp_path, line), tmp_path / "data")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [x for x in proc.stderr.splitlines() if x.startswith("hgpt data: error: ")]
    assert len(errors) == 1 and "b.jsonl:2:" in errors[0], proc.stderr  # the bad row is line 2 here
    assert "--on-error skip" in errors[0]  # a bad row: skipping is what the user can do
    assert not (tmp_path / "data" / local_snapshot(tmp_path / "snap").key / "filtered").exists()


def test_a_parquet_column_of_the_wrong_type_is_rejected_row_by_row_with_skip(tmp_path):
    d = _snap(tmp_path)
    write_parquet(d / "b_int_ids.parquet", [{"text": prose(20, seed=50 + i), "id": i} for i in range(3)])
    res = filter_snapshot(local_snapshot(d), tmp_path / "out", _cfg("skip"))
    assert res.rejected_by_rule.get("input/invalid_field") == 3, res.rejected_by_rule
    assert res.docs_in == res.kept + res.rejected == len(GOOD) + 3
    with pytest.raises(SourceError, match=r"b_int_ids.parquet row 0: 'id' must be a string"):
        filter_snapshot(local_snapshot(d), tmp_path / "out2", _cfg())


def test_a_self_looping_symlink_is_listed_as_skipped(tmp_path):
    d = _snap(tmp_path)
    (d / "loop.parquet").symlink_to("loop.parquet")
    (d / "dangling.jsonl").symlink_to(tmp_path / "nowhere.jsonl")
    proc = _hgpt_data_run(d, tmp_path / "data")
    assert proc.returncode == 0, proc.stderr
    skipped = {s["file"].rsplit("/", 1)[-1]: s["error"] for s in json.loads(proc.stdout)["filter"]["skipped_files"]}
    assert sorted(skipped) == ["dangling.jsonl", "loop.parquet"], skipped
    assert "symbolic link" in skipped["loop.parquet"] and "missing" in skipped["dangling.jsonl"], skipped
    assert "skipped files: 2" in proc.stderr and "loop.parquet" in proc.stderr, proc.stderr


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_a_missing_input_is_one_line_with_the_command_and_no_skip_hint(tmp_path, make):
    d = tmp_path / "nonexistent"
    if make == "empty":
        d.mkdir()
    proc = _hgpt_data_run(d, tmp_path / "data")
    assert proc.returncode == 2
    what = "not a directory" if make == "missing" else "no .parquet"
    assert proc.stderr.startswith(f"hgpt data: error: --input {d}: {what}"), proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "--on-error" not in proc.stderr, proc.stderr
    assert not (tmp_path / "data").exists()

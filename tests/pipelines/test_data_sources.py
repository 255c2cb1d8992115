"""Snapshots and document reading: keys, discovery, jsonl(.gz); the hub through huggingface_hub
against a local server speaking its HTTP API (pinned revision, resume, retries, integrity)."""

from __future__ import annotations

import gzip
import json

import pytest

from pipelines import sources
from pipelines.sources import (HubUnreachableError, ReadConfig, Snapshot, SourceError, discover_local_snapshots,
                               hub_snapshot, iter_documents, local_snapshot)
from pipeline_helpers import SAMPLES, require_samples, write_parquet


def test_sample_snapshots_are_discovered_with_stable_keys():
    require_samples()
    snaps = discover_local_snapshots(SAMPLES)
    assert [s.key.rsplit("-", 1)[0] for s in snaps] == ["snapshot-2026-11-a", "snapshot-2026-11-b"]
    assert all(s.kind == "local" and s.revision is None and s.files for s in snaps)
    assert [s.key for s in discover_local_snapshots(SAMPLES)] == [s.key for s in snaps]
    assert json.loads(json.dumps(snaps[0].to_dict()))["key"] == snaps[0].key


def test_key_changes_with_content(tmp_path):
    d = tmp_path / "2026 11 c!"
    write_parquet(d / "a.parquet", [{"text": "one", "id": "1"}])
    k1 = local_snapshot(d).key
    assert k1.startswith("2026-11-c-") and len(k1.rsplit("-", 1)[1]) == 8
    write_parquet(d / "a.parquet", [{"text": "two", "id": "1"}])
    assert local_snapshot(d).key != k1


def test_empty_or_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError, match="no .parquet"):
        local_snapshot(tmp_path)
    with pytest.raises(SourceError, match="not a directory"):
        local_snapshot(tmp_path / "nope")
    with pytest.raises(ValueError):
        Snapshot(key="bad/key", kind="local")


def test_jsonl_and_gz_are_read_in_bounded_batches(tmp_path):
    d = tmp_path / "snap"
    d.mkdir()
    rows = [{"text": f"document {i}", "id": f"j{i}", "url": "https://a.org/x"} for i in range(25)]
    (d / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with gzip.open(d / "b.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows[:5]))
    batches = list(iter_documents(local_snapshot(d), ReadConfig(batch_rows=10)))
    assert [len(b) for b in batches] == [10, 10, 5, 5]
    first = batches[0][0]
    assert (first["text"], first["id"], first["source_file"], first["source_row"]) == ("document 0", "j0", "a.jsonl", 0)
    assert set(first) == {f.name for f in sources.SCHEMA}
    limited = list(iter_documents(local_snapshot(d), ReadConfig(batch_rows=10, limit_docs=12)))
    assert sum(map(len, limited)) == 12
    by_bytes = list(iter_documents(local_snapshot(d), ReadConfig(batch_rows=10, batch_bytes=25)))
    assert max(sum(len(x["text"]) for x in b) for b in by_bytes) <= 25 and sum(map(len, by_bytes)) == 30


def test_missing_id_gets_a_stable_one(tmp_path):
    write_parquet(tmp_path / "s" / "x.parquet", [{"text": "a"}, {"text": "b"}])
    docs = [d for b in iter_documents(local_snapshot(tmp_path / "s")) for d in b]
    assert [d["id"] for d in docs] == ["x.parquet#0", "x.parquet#1"]


# ---------------------------------------------------------------------------------------------
# The hub, through huggingface_hub against the local hub server (tests/hub_server.py)


def _hub_file(hub, path: str, rev: str = "main") -> bytes:
    return hub.repo.at(rev).files[path]


def test_hub_snapshot_is_pinned_to_the_revision_it_resolved(hub, tmp_path):
    import pyarrow.parquet as pq

    first = hub.repo.at("main").sha
    snap = hub_snapshot("sample-10BT", max_files=None)
    assert snap.key == f"sample-10BT@{first[:12]}" and snap.kind == "hub" and snap.revision == first
    names = ["sample/10BT/000_00000.parquet", "sample/10BT/001_00000.parquet"]
    assert [f.read_bytes() for f in snap.files] == [_hub_file(hub, n) for n in names]
    assert str(tmp_path / "hf-home" / "hub") in str(snap.files[0])  # HF_HOME of this test
    assert sum(map(len, iter_documents(snap))) == 80
    # Only the dataset info names `main`; every file is fetched at the commit sha.
    resolves = hub.requests(contains="/resolve/")
    assert resolves and all(f"/resolve/{first}/" in r["path"] for r in resolves)

    from hub_server import fineweb_shaped_parquet, sample_rows

    second = hub.repo.commit({"sample/10BT/002_00000.parquet": fineweb_shaped_parquet(sample_rows(5, 200))})
    pinned = hub_snapshot("sample-10BT", revision=first, max_files=None)
    assert pinned.key == snap.key and pinned.files == snap.files
    newer = hub_snapshot("sample-10BT", max_files=None)
    assert newer.key == f"sample-10BT@{second[:12]}" and len(newer.files) == 3
    assert pq.read_table(newer.files[2]).num_rows == 5

    dump = hub_snapshot("CC-MAIN-2024-10", limit=3)
    assert dump.key == f"CC-MAIN-2024-10@{second[:12]}-n3"
    assert sum(map(len, iter_documents(dump, ReadConfig(limit_docs=dump.limit_docs)))) == 3
    assert Snapshot.from_dict(dump.to_dict()) == dump


def test_hub_download_cut_off_mid_file_resumes_with_a_range_request(hub, monkeypatch):
    from huggingface_hub import constants

    # huggingface_hub writes what it receives in chunks of 10 MB and resumes after the last whole
    # chunk; with 8 KiB chunks a file of a few hundred KB shows the resumption.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 8192)
    name = "sample/10BT/000_00000.parquet"
    data = _hub_file(hub, name)
    assert len(data) > 40_000
    hub.fault(kind="drop", path=name, after_bytes=20_000)
    snap = hub_snapshot("sample-10BT")
    assert snap.files[0].read_bytes() == data
    gets = hub.requests("GET", contains=name)
    assert [(g["range"], g["status"]) for g in gets] == [(None, 200), (f"bytes={2 * 8192}-", 206)]


def test_hub_5xx_answers_are_retried(hub, monkeypatch):
    name = "sample/10BT/000_00000.parquet"
    hub.fault(kind="status", path="info", status=500)
    hub.fault(kind="status", path=name, status=503)
    snap = hub_snapshot("sample-10BT")
    assert snap.files[0].read_bytes() == _hub_file(hub, name)
    assert [r["status"] for r in hub.requests("GET", contains="/api/datasets/")] == [500, 200]
    assert [r["status"] for r in hub.requests("GET", contains=name)] == [503, 200]

    # A hub that keeps failing: one line, after the retries, saying what to do instead.
    monkeypatch.setattr(sources, "HUB_RETRY_WAITS_S", (0.0, 0.0))
    hub.fault(kind="status", path="info", status=502, times=3)
    with pytest.raises(HubUnreachableError, match="local snapshot") as err:
        hub_snapshot("sample-10BT")
    assert "502" in str(err.value) and "\n" not in str(err.value)
    assert [r["status"] for r in hub.requests("GET", contains="/api/datasets/")][2:] == [502, 502, 502]


def test_hub_file_whose_bytes_do_not_match_is_refused_naming_it(hub):
    from pipelines.sources import HubIntegrityError

    name = "sample/10BT/001_00000.parquet"
    hub.fault(kind="corrupt", path=name)
    with pytest.raises(HubIntegrityError, match=f"fineweb@[0-9a-f]{{12}}/{name}: the downloaded bytes do not match "
                                                "the hub's sha256") as err:
        hub_snapshot("sample-10BT", max_files=2)
    assert "\n" not in str(err.value)
    # The bad copy is gone from the cache: the next try downloads it again, and it verifies.
    snap = hub_snapshot("sample-10BT", max_files=2)
    assert snap.files[1].read_bytes() == _hub_file(hub, name)
    assert len(hub.requests("GET", contains=name)) == 2


def test_unreachable_hub_says_how_to_use_a_local_snapshot(monkeypatch):
    from hub_server import unreachable_endpoint

    endpoint = unreachable_endpoint()
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(sources, "HUB_RETRY_WAITS_S", (0.0,))
    with pytest.raises(HubUnreachableError, match="local snapshot") as err:
        hub_snapshot("sample-10BT")
    assert endpoint in str(err.value) and "\n" not in str(err.value)

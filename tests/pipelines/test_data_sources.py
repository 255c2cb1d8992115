"""Snapshots and document reading: keys, discovery, jsonl(.gz), the hub's clear failure."""

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


def test_unreachable_hub_says_how_to_use_a_local_snapshot(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(sources, "_hub_list_and_download", offline)
    with pytest.raises(HubUnreachableError, match="local snapshot"):
        hub_snapshot("sample-10BT")


def test_hub_snapshot_key_records_the_revision(monkeypatch, tmp_path):
    f = write_parquet(tmp_path / "000_00000.parquet", [{"text": "hub text", "id": "h0"}])
    seen = {}

    def fake(repo, pattern, revision, cache_dir, max_files):
        seen.update(repo=repo, pattern=pattern)
        return "0123456789abcdef0123", [f]

    monkeypatch.setattr(sources, "_hub_list_and_download", fake)
    snap = hub_snapshot("CC-MAIN-2024-10", max_files=1)
    assert snap.key == "CC-MAIN-2024-10@0123456789ab" and snap.kind == "hub" and snap.revision.startswith("0123")
    assert seen == {"repo": "HuggingFaceFW/fineweb", "pattern": "data/CC-MAIN-2024-10/*.parquet"}
    assert hub_snapshot("sample-10BT").key.startswith("sample-10BT@") and seen["pattern"] == "sample/10BT/*.parquet"
    assert [d["text"] for b in iter_documents(snap) for d in b] == ["hub text"]
    limited = hub_snapshot("CC-MAIN-2024-10", limit=0)
    assert limited.key.endswith("-n0") and list(iter_documents(limited)) == []
    assert Snapshot.from_dict(limited.to_dict()) == limited

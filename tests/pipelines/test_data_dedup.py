"""Exact and MinHash dedup, within a snapshot and across snapshots, idempotent on rerun."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.dedup import DedupConfig, MinHasher, dedup_snapshot, normalise
from pipelines.filtering import KEPT_SCHEMA
from pipeline_helpers import prose


def _kept(path, texts, prefix):
    rows = [{"text": t, "id": f"{prefix}{i}", "source_file": "f.parquet", "source_row": i} for i, t in enumerate(texts)]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=KEPT_SCHEMA), path)
    return path


def test_normalise_folds_case_spacing_punctuation_and_numbers():
    assert normalise("Hello,  WORLD!\n 2024") == normalise("hello world 1999") == "hello world 0"


def test_minhash_finds_near_duplicates_only():
    h = MinHasher(DedupConfig())
    a = prose(60, seed=1)
    words = a.split()
    words[100] = "changed"
    b = " ".join(words)
    keys_a, keys_b, keys_c = h.bucket_keys(a), h.bucket_keys(b), h.bucket_keys(prose(60, seed=2))
    assert len(keys_a) == 14
    assert set(keys_a) & set(keys_b)
    assert not set(keys_a) & set(keys_c)


def test_within_and_across_snapshots(tmp_path):
    base = [prose(30, seed=i) for i in range(6)]
    near = base[1].replace("The", "A", 1)
    s1 = _kept(tmp_path / "s1.parquet", [base[0], base[1], base[0].upper(), near, base[2]], "a")
    r1 = dedup_snapshot(s1, tmp_path / "d1", tmp_path / "index", snapshot_key="s1")
    assert (r1.docs_in, r1.kept, r1.exact_duplicates, r1.near_duplicates) == (5, 3, 1, 1)
    dups = pq.read_table(r1.duplicates_path).to_pylist()
    assert [(d["id"], d["kind"], d["duplicate_of"]) for d in dups] == [("a2", "exact", "s1:a0"), ("a3", "near", "s1:a1")]

    s2 = _kept(tmp_path / "s2.parquet", [base[2], base[3], base[4]], "b")  # base[2] came with s1
    r2 = dedup_snapshot(s2, tmp_path / "d2", tmp_path / "index", snapshot_key="s2")
    assert (r2.kept, r2.exact_duplicates) == (2, 1)
    assert pq.read_table(r2.duplicates_path)["duplicate_of"].to_pylist() == ["s1:a4"]

    # Rerunning s1 after s2 exists: s1 is compared with nothing newer and never with itself.
    import shutil

    shutil.rmtree(tmp_path / "d1")
    again = dedup_snapshot(s1, tmp_path / "d1", tmp_path / "index", snapshot_key="s1")
    assert (again.kept, again.kept_sha256) == (r1.kept, r1.kept_sha256)
    r2b = dedup_snapshot(s2, tmp_path / "d2", tmp_path / "index", snapshot_key="s2")
    assert r2b.kept_sha256 == r2.kept_sha256

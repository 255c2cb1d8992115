"""Token shards and manifest: format, content, validation split, determinism."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from model.tokenizer import EOT_TOKEN, encode_document, get_encoding
from pipelines.shard_format import open_tokens, read_header
from pipelines.tokenize import TokenizeConfig, tokenize_documents
from pipeline_helpers import prose


def _docs_parquet(path, texts, group=7):
    schema = pa.schema([("text", pa.string()), ("id", pa.string()), ("source_file", pa.string())])
    with pq.ParquetWriter(path, schema) as w:
        for i in range(0, len(texts), group):  # several row groups: several worker tasks
            chunk = texts[i : i + group]
            w.write_table(pa.table({"text": chunk, "id": [f"d{i + j}" for j in range(len(chunk))],
                                    "source_file": ["f.parquet"] * len(chunk)}, schema=schema))
    return path


TEXTS = [prose(3 + i % 5, seed=i) for i in range(40)] + ["Say <|endoftext|> twice: <|endoftext|>.", "x"]


def _rebuild(out_dir, manifest) -> dict[str, np.ndarray]:
    """Each document's tokens, put back together from its pieces through the manifest."""
    docs: dict[str, list] = {}
    for row in manifest.sort_by([("doc_index", "ascending"), ("part", "ascending")]).to_pylist():
        toks = open_tokens(out_dir / row["shard"])[row["offset"] : row["offset"] + row["n_tokens"]]
        docs.setdefault(row["id"], []).append(np.asarray(toks))
    return {k: np.concatenate(v) for k, v in docs.items()}


def test_shards_hold_every_document_exactly(tmp_path):
    src = _docs_parquet(tmp_path / "docs.parquet", TEXTS)
    cfg = TokenizeConfig(shard_tokens=500, val_fraction=0.1, workers=1)
    res = tokenize_documents(src, tmp_path / "shards", cfg)
    out = tmp_path / "shards"
    manifest = pq.read_table(out / "manifest.parquet")
    assert res.docs == len(TEXTS) and res.val_docs >= 1 and res.train_docs >= 1
    names = sorted(p.name for p in out.glob("*.bin"))
    assert names[0].startswith("train_000000") and "val_000000.bin" in names
    for split in ("train", "val"):
        shards = sorted(out.glob(f"{split}_*.bin"))
        sizes = [read_header(s) for s in shards]
        assert all(n == 500 for n in sizes[:-1]) and 0 < sizes[-1] <= 500  # filled like llm.c
    rebuilt = _rebuild(out, manifest)
    for i, text in enumerate(TEXTS):
        assert rebuilt[f"d{i}"].tolist() == encode_document(text)
    assert sum(read_header(s) for s in out.glob("*.bin")) == res.tokens == manifest["n_tokens"].to_numpy().sum()


def test_literal_endoftext_never_becomes_the_separator(tmp_path):
    src = _docs_parquet(tmp_path / "docs.parquet", TEXTS)
    res = tokenize_documents(src, tmp_path / "shards", TokenizeConfig(shard_tokens=10_000, workers=1))
    all_tokens = np.concatenate([np.asarray(open_tokens(p)) for p in sorted((tmp_path / "shards").glob("*.bin"))])
    assert int((all_tokens == EOT_TOKEN).sum()) == res.docs  # one separator per document, no more
    literal_doc = encode_document(TEXTS[40])
    assert literal_doc.count(EOT_TOKEN) == 1
    assert get_encoding().decode(literal_doc[1:]) == TEXTS[40]


def test_validation_split_is_deterministic_and_never_empty(tmp_path):
    src = _docs_parquet(tmp_path / "docs.parquet", TEXTS[:3])
    res = tokenize_documents(src, tmp_path / "a", TokenizeConfig(val_fraction=0.001, workers=1))
    assert res.val_docs == 1 and res.train_docs == 2
    m = pq.read_table(tmp_path / "a" / "manifest.parquet")
    assert set(m.filter(pa.compute.equal(m["split"], "val"))["id"].to_pylist()) <= {"d0", "d1", "d2"}


def test_byte_identical_across_runs_and_worker_counts(tmp_path):
    src = _docs_parquet(tmp_path / "docs.parquet", TEXTS)
    a = tokenize_documents(src, tmp_path / "a", TokenizeConfig(shard_tokens=700, workers=1))
    b = tokenize_documents(src, tmp_path / "b", TokenizeConfig(shard_tokens=700, workers=2))
    assert a.content_hash == b.content_hash
    for f in (tmp_path / "a").iterdir():
        if f.suffix in (".bin", ".parquet"):
            assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes(), f.name
    # a finished run is recognised and not redone
    mtime = (tmp_path / "a" / "manifest.parquet").stat().st_mtime_ns
    again = tokenize_documents(src, tmp_path / "a", TokenizeConfig(shard_tokens=700, workers=1))
    assert again.content_hash == a.content_hash
    assert (tmp_path / "a" / "manifest.parquet").stat().st_mtime_ns == mtime


def test_missing_columns_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"text": ["hello"]}), path)
    with pytest.raises(ValueError, match="missing column"):
        tokenize_documents(path, tmp_path / "out", TokenizeConfig(workers=1))
    assert not (tmp_path / "out").exists()


def test_config_validation():
    with pytest.raises(ValueError):
        TokenizeConfig(shard_tokens=0)
    with pytest.raises(ValueError):
        TokenizeConfig(val_fraction=1.0)


def test_shard_writer_is_unreadable_until_closed(tmp_path):
    from pipelines.shard_format import ShardError, ShardWriter

    w = ShardWriter(tmp_path / "s.bin")
    w.write(np.arange(10, dtype=np.uint16))
    w._f.flush()
    with pytest.raises(ShardError, match="bad magic 0"):  # the real header comes at close()
        read_header(tmp_path / "s.bin")  # a crash here leaves a file no reader accepts
    w.write(np.array([50256, 7]))  # other integer dtypes are range-checked
    with pytest.raises(ShardError):
        w.write(np.array([70000]))
    w.close()
    assert open_tokens(tmp_path / "s.bin").tolist() == list(range(10)) + [50256, 7]


def _part0(out_dir):
    m = pq.read_table(out_dir / "manifest.parquet")
    return m, m.filter(pa.compute.equal(m["part"], 0))


def test_documents_are_in_the_order_of_a_seeded_hash_of_their_id(tmp_path):
    import json

    from pipelines.tokenize import shuffle_keys

    src = _docs_parquet(tmp_path / "docs.parquet", TEXTS)
    cfg = TokenizeConfig(shard_tokens=600, val_fraction=0.1, workers=1, shuffle_seed=3)
    tokenize_documents(src, tmp_path / "a", cfg)
    manifest, docs = _part0(tmp_path / "a")
    assert json.loads(manifest.schema.metadata[b"hgpt.shuffle"])["seed"] == 3
    for split in ("train", "val"):
        rows = docs.filter(pa.compute.equal(docs["split"], split))
        keys = rows["shuffle_key"].to_numpy()
        assert keys.tolist() == shuffle_keys(rows["id"].to_pylist(), 3).tolist()
        assert np.all(np.diff(keys.astype(object)) >= 0)  # written in ascending key
        # the shards hold exactly these documents, back to back, in this order
        shards = sorted((tmp_path / "a").glob(f"{split}_*.bin"))
        stream = np.concatenate([np.asarray(open_tokens(s)) for s in shards])
        want = np.concatenate([encode_document(TEXTS[int(i[1:])]) for i in rows["id"].to_pylist()])
        assert stream.tolist() == want.tolist()
    train_rows = docs.filter(pa.compute.equal(docs["split"], "train"))["doc_index"].to_pylist()
    assert train_rows != sorted(train_rows)  # no longer the source order
    other = TokenizeConfig(shard_tokens=600, val_fraction=0.1, workers=1, shuffle_seed=4)
    tokenize_documents(src, tmp_path / "b", other)
    assert _part0(tmp_path / "b")[1]["id"].to_pylist() != docs["id"].to_pylist()  # seed matters
    # the split does not depend on the seed: only the order within each split
    for split in ("train", "val"):
        ids = {s: set(_part0(tmp_path / s)[1].filter(
            pa.compute.equal(_part0(tmp_path / s)[1]["split"], split))["id"].to_pylist()) for s in "ab"}
        assert ids["a"] == ids["b"]


def test_shuffle_conserves_documents_even_with_repeated_ids(tmp_path):
    texts = TEXTS[:20]
    schema = pa.schema([("text", pa.string()), ("id", pa.string()), ("source_file", pa.string())])
    src = tmp_path / "docs.parquet"
    ids = [f"d{i % 7}" for i in range(len(texts))]  # repeated ids tie on the key: row decides
    sources = [None if i == 3 else f"f{i % 3}.parquet" for i in range(len(texts))]
    with pq.ParquetWriter(src, schema) as w:
        for i in range(0, len(texts), 6):
            w.write_table(pa.table({"text": texts[i:i + 6], "id": ids[i:i + 6],
                                    "source_file": sources[i:i + 6]}, schema=schema))
    res = tokenize_documents(src, tmp_path / "a", TokenizeConfig(shard_tokens=300, val_fraction=0.2, workers=1))
    manifest, docs = _part0(tmp_path / "a")
    rows = docs["doc_index"].to_pylist()
    assert sorted(rows) == list(range(len(texts)))  # each input row exactly once
    assert res.docs == len(texts) and res.tokens == sum(len(encode_document(t)) for t in texts)
    for row in docs.to_pylist():  # the id and source travel with their own document
        assert row["id"] == ids[row["doc_index"]] and row["source_file"] == sources[row["doc_index"]]
    rebuilt: dict[int, list] = {}
    for row in manifest.to_pylist():
        toks = open_tokens(tmp_path / "a" / row["shard"])[row["offset"]:row["offset"] + row["n_tokens"]]
        rebuilt.setdefault(row["doc_index"], []).extend(np.asarray(toks).tolist())
    assert all(rebuilt[r] == encode_document(texts[r]) for r in range(len(texts)))
    ties = [(r["shuffle_key"], r["doc_index"]) for r in docs.to_pylist() if r["split"] == "train"]
    assert ties == sorted(ties)  # equal keys keep input row order


def test_many_small_sort_buckets_give_the_same_bytes_as_one(tmp_path):
    """Memory is bounded by the bucket size setting, and the setting never changes the output."""
    src = _docs_parquet(tmp_path / "docs.parquet", TEXTS)
    one = tokenize_documents(src, tmp_path / "one", TokenizeConfig(shard_tokens=700, workers=1))
    many = tokenize_documents(src, tmp_path / "many", TokenizeConfig(
        shard_tokens=700, workers=2, shuffle_bucket_bytes=256))
    assert one.shuffle_buckets == 1 and one.largest_bucket_tokens == one.tokens
    assert many.shuffle_buckets >= 16
    # hash partitioning spreads the documents: no bucket holds more than a few of the 42
    assert many.largest_bucket_tokens < one.tokens / 4
    assert one.content_hash == many.content_hash
    for f in (tmp_path / "one").iterdir():
        if f.suffix in (".bin", ".parquet"):
            assert f.read_bytes() == (tmp_path / "many" / f.name).read_bytes(), f.name
    assert not list((tmp_path / "many").glob(".*"))  # the bucket files are gone


CRASH = """
import os, signal, sys
from pipelines import tokenize
calls = {"n": 0}
real = getattr(tokenize._Buckets, sys.argv[3])
def dies(self, *args):
    calls["n"] += 1
    if calls["n"] == int(sys.argv[4]):  # kill -9 of ourselves: no cleanup runs
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, *args)
setattr(tokenize._Buckets, sys.argv[3], dies)
tokenize.tokenize_documents(sys.argv[1], sys.argv[2], tokenize.TokenizeConfig(
    shard_tokens=400, workers=1, shuffle_bucket_bytes=512))
"""


@pytest.mark.parametrize("where", [("add", 3), ("read", 4)], ids=["while-bucketing", "while-writing-shards"])
def test_kill_9_mid_sort_then_rerun_gives_the_same_bytes(tmp_path, where):
    """Killed with bucket files on disk (and, in step 2, some shards written), the stage leaves
    nothing under its final name; a rerun removes the leftovers and writes the very same bytes."""
    import signal
    import subprocess
    import sys

    from pipeline_helpers import REPO

    src = _docs_parquet(tmp_path / "docs.parquet", TEXTS)
    ref = tokenize_documents(src, tmp_path / "ref", TokenizeConfig(
        shard_tokens=400, workers=1, shuffle_bucket_bytes=512))
    assert ref.shuffle_buckets >= 16
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", CRASH, str(src), str(out), *map(str, where)],
                          cwd=REPO, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    leftovers = list(tmp_path.glob(".out.work/*/tokens/*/*.tok"))
    assert leftovers and not out.exists()  # killed mid-sort, nothing published
    again = tokenize_documents(src, out, TokenizeConfig(shard_tokens=400, workers=2,
                                                        shuffle_bucket_bytes=512))
    assert again.content_hash == ref.content_hash
    assert not list(tmp_path.glob(".out.tmp-*")) and not list(out.glob(".*"))
    assert not (tmp_path / ".out.work").exists()
    for f in (tmp_path / "ref").iterdir():
        if f.suffix in (".bin", ".parquet"):
            assert f.read_bytes() == (out / f.name).read_bytes(), f.name


def _split_hashes(out_dir):
    """The validation hash of each document of each split (part 0 rows)."""
    from pipelines.tokenize import _id_hashes

    _, docs = _part0(out_dir)
    return {s: _id_hashes(docs.filter(pa.compute.equal(docs["split"], s))["id"].to_pylist())
            for s in ("val", "train")}


def test_small_snapshot_validation_holds_val_min_tokens_and_trains(tmp_path, capsys):
    """1% of a ~30k-token snapshot is a document or two, under one window; val_min_tokens tops
    the split up, in id-hash order, to 8 windows of GPT-2's context, and `hgpt train --preset
    tiny` measures a held-out loss on it."""
    from evaluation.heldout import validation_windows
    from hgpt.cli import main

    texts = [prose(40, seed=i) for i in range(60)]
    src = _docs_parquet(tmp_path / "docs.parquet", texts)
    cfg = TokenizeConfig(val_fraction=0.01, workers=1)
    assert cfg.val_min_tokens == 8 * 1025
    res = tokenize_documents(src, tmp_path / "a", cfg)
    assert res.tokens > 2 * cfg.val_min_tokens  # large enough for the minimum: no warning
    assert res.val_tokens >= cfg.val_min_tokens and res.val_note == ""
    assert "warning" not in capsys.readouterr().err
    val = sorted((tmp_path / "a").glob("val_*.bin"))
    assert len(validation_windows(val, 10**6, 1024)) >= 8
    assert len(validation_windows(val, 10**6, 256)) >= 32
    # the shortest prefix in hash order that reaches the minimum: one document fewer would not
    h = _split_hashes(tmp_path / "a")
    assert h["val"].max() < h["train"].min()
    _, docs = _part0(tmp_path / "a")
    val_docs = docs.filter(pa.compute.equal(docs["split"], "val"))
    tokens_by_hash = dict(zip(h["val"].tolist(), val_docs["doc_tokens"].to_pylist()))
    assert res.val_tokens - tokens_by_hash[int(h["val"].max())] < cfg.val_min_tokens
    # the same bytes with more workers and a many-bucket sort
    b = tokenize_documents(src, tmp_path / "b", TokenizeConfig(
        val_fraction=0.01, workers=2, shuffle_bucket_bytes=512))
    assert b.content_hash == res.content_hash and b.shuffle_buckets > 1
    run = tmp_path / "run"
    assert main(["train", "--preset", "tiny", "--data", str(tmp_path / "a"), "--out", str(run),
                 "--max-steps", "1", "--device", "cpu"]) == 0
    import json

    result = json.loads((run / "result.json").read_text())
    assert np.isfinite(result["val_loss"])


def test_snapshot_smaller_than_the_minimum_says_so_in_one_line(tmp_path, capsys):
    src = _docs_parquet(tmp_path / "docs.parquet", TEXTS)
    cfg = TokenizeConfig(val_fraction=0.01, workers=1)
    res = tokenize_documents(src, tmp_path / "a", cfg)
    assert res.tokens < cfg.val_min_tokens
    # validation takes as much as val_max_share allows: the next document in hash order would
    # overflow it; training keeps the rest
    assert 0 < res.val_tokens <= cfg.val_max_share * res.tokens and res.train_tokens >= res.val_tokens
    h = _split_hashes(tmp_path / "a")
    assert h["val"].max() < h["train"].min()
    _, docs = _part0(tmp_path / "a")
    train_docs = docs.filter(pa.compute.equal(docs["split"], "train"))
    next_doc = int(np.argmin(h["train"]))
    assert res.val_tokens + train_docs["doc_tokens"][next_doc].as_py() > cfg.val_max_share * res.tokens
    err = [line for line in capsys.readouterr().err.splitlines() if "val_min_tokens" in line]
    assert len(err) == 1 and err[0].startswith("warning: tokenize: validation holds ")
    assert f"{res.val_tokens:,} tokens" in err[0] and f"only {res.tokens:,} tokens" in err[0]
    assert res.val_note and res.val_note in err[0]
    # below even one document's share: still the lowest-hash document, as before
    tiny = tokenize_documents(src, tmp_path / "b", TokenizeConfig(
        val_fraction=0.01, val_max_share=1e-6, workers=1))
    assert tiny.val_docs == 1
    # val_fraction 0 turns validation off, whatever the minimum
    off = tokenize_documents(src, tmp_path / "c", TokenizeConfig(val_fraction=0.0, workers=1))
    assert off.val_docs == 0 and off.val_note == "" and not list((tmp_path / "c").glob("val_*"))


def test_validation_split_does_not_depend_on_arrival_order_or_chunking():
    """The streaming choice (a bounded heap of the lowest hashes) equals the prefix computed
    from the whole list at once, whatever the order and chunk sizes the documents come in."""
    from pipelines.tokenize import ValidationSplit

    rng = np.random.default_rng(0)
    n = 2000
    hashes = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
    hashes[5:9] = hashes[4]  # repeated ids: one hash, always on the same side
    lengths = rng.integers(1, 300, n).astype(np.int64)
    cfg = TokenizeConfig(val_fraction=0.001, val_min_tokens=20_000, workers=1)

    def choose(order, chunk):
        s = ValidationSplit(cfg)
        for i in range(0, n, chunk):
            s.add(hashes[order[i:i + chunk]], lengths[order[i:i + chunk]])
        s.finish()
        return s, s.is_val(hashes)

    split, ref = choose(np.arange(n), n)
    by_hash = np.argsort(hashes, kind="stable")
    cum = np.cumsum(lengths[by_hash])
    k = int(np.searchsorted(cum, 20_000))  # shortest prefix holding 20,000 tokens
    last = hashes[by_hash[k]]
    assert ref.tolist() == (hashes <= last).tolist()
    assert len(np.unique(ref[4:9])) == 1
    assert lengths[ref].sum() >= 20_000
    # memory: only the prefix's own hashes are held, not every document's
    assert len(split.held) == len(np.unique(hashes[ref])) < n // 4
    for seed, chunk in ((1, 7), (2, 1), (3, 500)):
        _, got = choose(np.random.default_rng(seed).permutation(n), chunk)
        assert got.tolist() == ref.tolist()


def test_validation_config_errors():
    for bad in (dict(val_min_tokens=-1), dict(val_max_share=0.0), dict(val_max_share=1.0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TokenizeConfig(**bad)

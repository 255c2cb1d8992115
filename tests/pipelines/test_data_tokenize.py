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

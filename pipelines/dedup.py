"""Stage 2: remove exact and near duplicates, within a snapshot and against earlier snapshots.

Exact: a 64-bit hash of the normalised text (lowercase, punctuation dropped, whitespace folded).
Near: MinHash with FineWeb's parameters (word 5-grams, 14 buckets x 8 hashes); two documents
are near duplicates when all 8 hashes of any one bucket agree (LSH). The first document seen
is kept, later ones are recorded in `duplicates.parquet` with what they duplicate.

The index directory holds one file of hashes per snapshot plus `order.json`, the order in which
snapshots were first deduplicated. A snapshot is compared only with snapshots registered before
it, so a rerun of the same snapshot gives the same output (it never matches itself) and a new
snapshot does not re-add what earlier ones had.

Snapshots deduplicated side by side (Dagster runs two partitions at once) take turns on the
index: each holds `index_dir/.lock` from reading `order.json` to registering itself, so the one
that waits compares against the other's finished index, exactly as if they had run one after the
other. A snapshot is registered only once its index file is complete, and `order.json` is
replaced atomically, so a reader always sees a complete list of complete snapshots.

    hgpt data dedup --kept /tmp/hgpt/filtered/kept.parquet --out /tmp/hgpt/dedup --index /tmp/hgpt/index
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import os
import re
import sys
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import atomic
from pipelines.locking import LockHeld, exclusive_lock
from pipelines.filtering import KEPT_SCHEMA, _PARQUET_OPTS

STAGE_VERSION = "dedup-1"
DUP_SCHEMA = pa.schema(
    [("id", pa.string()), ("source_file", pa.string()), ("source_row", pa.int64()),
     ("kind", pa.string()), ("duplicate_of", pa.string())]
)
_INDEX_SCHEMA = pa.schema([("kind", pa.string()), ("hash", pa.uint64()), ("id", pa.string())])
_PRIME = np.uint64((1 << 61) - 1)


@dataclass(frozen=True)
class DedupConfig:
    """MinHash parameters (FineWeb's by default) and switches."""

    exact: bool = True
    minhash: bool = True
    n_grams: int = 5
    num_buckets: int = 14
    hashes_per_bucket: int = 8
    seed: int = 1
    batch_rows: int = 512

    def __post_init__(self) -> None:
        if self.n_grams < 1 or self.num_buckets < 1 or self.hashes_per_bucket < 1:
            raise ValueError("n_grams, num_buckets and hashes_per_bucket must be >= 1")


@dataclass
class DedupResult:
    snapshot: str
    docs_in: int
    kept: int
    exact_duplicates: int
    near_duplicates: int
    kept_path: str
    duplicates_path: str
    kept_sha256: str
    index_file: str
    fingerprint: str

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def conserved(self) -> bool:
        return self.docs_in == self.kept + self.exact_duplicates + self.near_duplicates


_PUNCT_RE = re.compile(r"[^\w\s]|_")
_SPACE_RE = re.compile(r"\s+")
_DIGITS_RE = re.compile(r"\d+")


def normalise(text: str) -> str:
    """Lowercase, numbers folded to 0, punctuation and accents dropped, whitespace folded: the
    text two copies of a page share even when boilerplate spacing or casing differs."""
    text = _DIGITS_RE.sub("0", text.lower())
    text = _SPACE_RE.sub(" ", _PUNCT_RE.sub(" ", text)).strip()
    if not text.isascii():
        text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    return text


def _h64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def exact_hash(text: str) -> int:
    return _h64(normalise(text).encode())


class MinHasher:
    """Signatures of word n-gram sets; bucket keys mix the bucket number in."""

    def __init__(self, cfg: DedupConfig):
        self.cfg = cfg
        rng = np.random.default_rng(cfg.seed)
        n = cfg.num_buckets * cfg.hashes_per_bucket
        self.a = rng.integers(1, (1 << 31) - 1, size=n, dtype=np.uint64)
        self.b = rng.integers(0, (1 << 31) - 1, size=n, dtype=np.uint64)

    def bucket_keys(self, text: str) -> list[int]:
        words = normalise(text).split()
        if not words:
            return []
        n = self.cfg.n_grams
        # 32-bit shingle hashes keep a*x+b inside uint64 before the modulo
        shingles = {" ".join(words[i : i + n]) for i in range(max(1, len(words) - n + 1))}
        x = np.fromiter((_h64(s.encode()) & 0xFFFFFFFF for s in sorted(shingles)), dtype=np.uint64, count=len(shingles))
        sig = np.full(self.a.shape, np.iinfo(np.uint64).max, dtype=np.uint64)
        for start in range(0, len(x), 4096):  # chunks bound memory on very long documents
            chunk = x[start : start + 4096, None]
            sig = np.minimum(sig, ((chunk * self.a[None, :] + self.b[None, :]) % _PRIME).min(axis=0))
        sig = sig.reshape(self.cfg.num_buckets, self.cfg.hashes_per_bucket)
        return [_h64(bytes([i]) + row.tobytes()) for i, row in enumerate(sig)]


def _order_file(index_dir: Path) -> Path:
    return index_dir / "order.json"


def registered_snapshots(index_dir: str | os.PathLike) -> list[str]:
    """The snapshots whose index is complete, in the order they were first deduplicated."""
    order_file = _order_file(Path(index_dir))
    return json.loads(order_file.read_text())["order"] if order_file.exists() else []


def _earlier_snapshots(index_dir: Path, key: str) -> list[str]:
    """The snapshots `key` is compared with: those registered before it, or every registered
    one when `key` is new (it will be appended after them)."""
    order = registered_snapshots(index_dir)
    return order[: order.index(key)] if key in order else order


def _register(index_dir: Path, key: str) -> None:
    """Append `key` to order.json once its index file is complete (called under the lock)."""
    order = registered_snapshots(index_dir)
    if key not in order:
        atomic.write_json_atomic(_order_file(index_dir), {"order": [*order, key]})


@contextlib.contextmanager
def index_lock(index_dir: Path):
    """Take turns on the index; say so when another snapshot's dedup makes this one wait."""
    lock, what = index_dir / ".lock", f"dedup index {index_dir}"
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(exclusive_lock(lock, what=what))
        except LockHeld as held:
            print(f"waiting: {held}", file=sys.stderr, flush=True)
            stack.enter_context(exclusive_lock(lock, what=what, wait=True))
        yield


def _load_index(index_dir: Path, keys: list[str]) -> tuple[dict[int, str], dict[int, str]]:
    exact: dict[int, str] = {}
    near: dict[int, str] = {}
    for key in keys:
        path = index_dir / f"{key}.parquet"
        if not path.exists():
            raise FileNotFoundError(
                f"{path}: dedup index of earlier snapshot {key} is missing; rerun dedup for {key} "
                f"or remove it from {_order_file(index_dir)}"
            )
        t = pq.read_table(path)
        for kind, h, doc_id in zip(t["kind"].to_pylist(), t["hash"].to_pylist(), t["id"].to_pylist()):
            (exact if kind == "exact" else near).setdefault(h, f"{key}:{doc_id}")
    return exact, near


def dedup_snapshot(kept_parquet: str | os.PathLike, out_dir: str | os.PathLike, index_dir: str | os.PathLike,
                   cfg: DedupConfig = DedupConfig(), snapshot_key: str | None = None, progress=None) -> DedupResult:
    """Deduplicate `kept_parquet` (the filter stage's output) into `out_dir/{kept,duplicates}.parquet`
    and record its hashes in `index_dir/<snapshot_key>.parquet`."""
    kept_parquet, out_dir, index_dir = Path(kept_parquet), Path(out_dir), Path(index_dir)
    key = snapshot_key or kept_parquet.parent.parent.name or "snapshot"
    index_dir.mkdir(parents=True, exist_ok=True)
    with index_lock(index_dir):
        earlier = _earlier_snapshots(index_dir, key)
        earlier_hashes = [atomic.sha256_file(index_dir / f"{k}.parquet") if (index_dir / f"{k}.parquet").exists() else None for k in earlier]
        fp = atomic.fingerprint(stage=STAGE_VERSION, key=key, input=atomic.sha256_file(kept_parquet),
                                cfg=asdict(cfg), earlier=list(zip(earlier, earlier_hashes)))
        index_file = index_dir / f"{key}.parquet"
        done = atomic.completed(out_dir, fp)
        if done is not None and index_file.exists():
            return DedupResult(**done["result"])

        exact_seen, near_seen = _load_index(index_dir, earlier)
        hasher = MinHasher(cfg)
        counts = collections.Counter()
        idx_kind: list[str] = []
        idx_hash: list[int] = []
        idx_id: list[str] = []
        pf = pq.ParquetFile(kept_parquet)
        with atomic.staged_dir(out_dir) as stage:
            kept_w = atomic.parquet_writer(stage / "kept.parquet", KEPT_SCHEMA, **_PARQUET_OPTS)
            dup_w = atomic.parquet_writer(stage / "duplicates.parquet", DUP_SCHEMA, **_PARQUET_OPTS)
            for batch in pf.iter_batches(batch_size=cfg.batch_rows):
                table = pa.Table.from_batches([batch]).cast(KEPT_SCHEMA)
                texts = table["text"].to_pylist()
                ids = table["id"].to_pylist()
                keep_mask = []
                dups = []
                for row, (text, doc_id) in enumerate(zip(texts, ids)):
                    counts["in"] += 1
                    if cfg.exact:
                        h = exact_hash(text)
                        if h in exact_seen:
                            dups.append((row, "exact", exact_seen[h]))
                            keep_mask.append(False)
                            counts["exact"] += 1
                            continue
                        exact_seen[h] = f"{key}:{doc_id}"
                        idx_kind.append("exact"); idx_hash.append(h); idx_id.append(doc_id)
                    if cfg.minhash:
                        buckets = hasher.bucket_keys(text)
                        match = next((near_seen[b] for b in buckets if b in near_seen), None)
                        if match is not None:
                            dups.append((row, "near", match))
                            keep_mask.append(False)
                            counts["near"] += 1
                            continue
                        for b in buckets:
                            near_seen.setdefault(b, f"{key}:{doc_id}")
                            idx_kind.append("band"); idx_hash.append(b); idx_id.append(doc_id)
                    keep_mask.append(True)
                kept_table = table.filter(pa.array(keep_mask, type=pa.bool_()))
                counts["kept"] += kept_table.num_rows
                if kept_table.num_rows:
                    kept_w.write_table(kept_table)
                if dups:
                    rows = [r for r, _, _ in dups]
                    dup_w.write_table(pa.table({
                        "id": table["id"].take(rows), "source_file": table["source_file"].take(rows),
                        "source_row": table["source_row"].take(rows),
                        "kind": pa.array([k for _, k, _ in dups], pa.string()),
                        "duplicate_of": pa.array([d for _, _, d in dups], pa.string()),
                    }, schema=DUP_SCHEMA))
                if progress is not None:
                    progress.update(len(texts))
            kept_w.close()
            dup_w.close()
            # The index is written before the outputs become visible: a crash in between leaves
            # the index, and the rerun (which skips this snapshot's own file) recomputes the same.
            tmp_index = index_dir / f".{key}.parquet.tmp-{os.getpid()}"
            try:
                pq.write_table(pa.table({"kind": pa.array(idx_kind, pa.string()),
                                         "hash": pa.array(idx_hash, pa.uint64()),
                                         "id": pa.array(idx_id, pa.string())}, schema=_INDEX_SCHEMA), tmp_index)
                with open(tmp_index, "rb") as fh:  # on disk before order.json names it
                    os.fsync(fh.fileno())
                os.replace(tmp_index, index_file)
            finally:
                tmp_index.unlink(missing_ok=True)
            _register(index_dir, key)
            result = DedupResult(
                snapshot=key, docs_in=counts["in"], kept=counts["kept"], exact_duplicates=counts["exact"],
                near_duplicates=counts["near"], kept_path=str(out_dir / "kept.parquet"),
                duplicates_path=str(out_dir / "duplicates.parquet"),
                kept_sha256=atomic.sha256_file(stage / "kept.parquet"), index_file=str(index_file), fingerprint=fp,
            )
            if not result.conserved:
                raise AssertionError(f"dedup stage lost documents: {result.to_dict()}")
            atomic.write_json_atomic(stage / atomic.SUCCESS, {"fingerprint": fp, "result": result.to_dict()})
        return result

"""Stage 3: documents -> GPT-2 token shards in llm.c's format, plus a parquet manifest.

Each document becomes `[<|endoftext|>] + encode_ordinary(text)`; the literal text
"<|endoftext|>" inside a page stays ordinary text. Shards hold `shard_tokens` tokens each (the
last of a split holds the rest), documents run on across shard boundaries as in llm.c, and the
manifest has one row per piece: split, shard, offset, tokens, document id, source file.

Validation documents are chosen by a hash of their id, so the split is the same whatever the
order or the number of worker processes: those whose hash falls below `val_fraction`, and, where
they hold fewer than `val_min_tokens` (a small snapshot's 1% can be shorter than one training
window), the next ones in hash order until they do, but never more than `val_max_share` of the
snapshot's tokens (then at least the lowest-hash document; a warning line says the minimum was
not met). The validation documents are thus always a prefix of the documents in hash order.

The work is a list of tasks over slices of the input (task i of n: a range of row groups, encoded
one row group at a time; the stages before write groups of at most 512 documents, which bounds a
task's memory), run in this process, a local process pool or on Ray (`pipelines.executors`).
Each task writes its documents into its own sort buckets (below) and the few lowest-hash
documents that could enter validation, then its completion record, in a work directory beside
the output: a rerun after a crash redoes only the tasks that did not finish. A task's candidates
for validation are its shortest id-hash prefix holding val_min_tokens; the snapshot's prefix is
made of the tasks' (a hash in it lies below the snapshot's last, hence in its task's prefix), so
the split is the one a single pass gives. Documents are counted per task and for the snapshot.

Document order: shuffled, so that any contiguous read of a shard is close to an i.i.d. sample of
the corpus (FineWeb's published files are shuffled, which is what makes llm.c's front-to-back
reading work there; local snapshots come file by file, page by page). Each document's sort key is
`blake2b-64(id, key=shuffle_seed)`; documents are written in ascending key (ties, i.e. repeated
ids, by input row). The order is thus a function of the ids and the seed alone: not of the input
order, the number of workers, or how the sort is carried out. The seed is recorded in the
manifest (schema metadata `hgpt.shuffle`, and each row's key in `shuffle_key`).

The sort is external, in two levels, so memory is bounded at any corpus size:
1. in the tasks, each document goes, by the top bits of its key, to one of 2**k bucket files of
   its task (tokens, fixed-width records, id and source strings; appended, never held);
2. the merge then reads the buckets one at a time, in key order, each from every task, sorts it
   by (key, input row) in memory and writes it out; the order is the same whatever the tasks.
Buckets are key ranges, so concatenating them sorted is the global sort: the bucket count (set
from the input's text bytes and `shuffle_bucket_bytes`, ~ the peak memory of step 2) changes the
memory and never the output. The keys are uniform, so buckets get equal shares of the documents
(a bucket of ~50k pages is within a few percent of the mean). At most 2**16 buckets, i.e. 16 TiB
of text at the default 256 MiB each; only past that does a bucket outgrow the setting.
Why a global sort and not a shuffle within bounded groups: a group shuffle leaves each group's
documents (one source file, one crawl period) together, so a contiguous read still sees a narrow
slice of the corpus; sorting by a keyed hash is a uniform permutation of the whole of it, at the
cost of one more pass: every token is written and read once more (uint16, small next to
encoding), and the stage needs the shards' size again in temporary disk space until it finishes
(the buckets stay until the shards are published, so a crash in the merge redoes only the merge).
A crash leaves the work directory and a staging directory; the rerun removes the staging one and
reuses the finished tasks (the order does not depend on what was written before).

    hgpt data tokenize --docs /tmp/hgpt/dedup/kept.parquet --out /tmp/hgpt/shards
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from model.tokenizer import EOT_TOKEN, get_encoding  # model/__init__ is lazy: no torch here
from pipelines import atomic
from pipelines.executors import check_executor, open_executor, recorded, row_group_slices
from pipelines.filtering import default_workers
from pipelines.shard_format import ShardWriter

STAGE_VERSION = "tokenize-3"  # 2: documents in shuffled order; 3: val_min_tokens
MANIFEST_COLUMNS = [
    ("split", pa.string()),
    ("shard", pa.string()),
    ("offset", pa.int64()),  # first token of this piece inside the shard
    ("n_tokens", pa.int64()),  # tokens of this piece (EOT included in a document's first piece)
    ("doc_index", pa.int64()),  # row of the document in the input parquet
    ("id", pa.string()),
    ("part", pa.int32()),  # 0 for a document's first piece, 1 for its continuation, ...
    ("doc_tokens", pa.int64()),
    ("source_file", pa.string()),
    ("shuffle_key", pa.uint64()),  # blake2b-64(id, key=seed): documents are in ascending key
]
MANIFEST_SCHEMA = pa.schema(MANIFEST_COLUMNS)


def manifest_schema(shuffle_seed: int) -> pa.Schema:
    """The manifest's schema, recording how its documents were ordered."""
    return MANIFEST_SCHEMA.with_metadata({"hgpt.shuffle": json.dumps({
        "seed": shuffle_seed, "key": "blake2b(id utf-8, digest_size=8, key=seed as 8 bytes "
        "little-endian), big-endian", "order": "ascending key, then input row"})})


@dataclass(frozen=True)
class TokenizeConfig:
    """Shard size, validation split, document order and parallelism.

    `shuffle_seed` chooses the document order (see the module docstring) and is part of the
    output's fingerprint; `shuffle_bucket_bytes` (input text per bucket of the external sort,
    about the sort's peak memory), `workers`, `tasks` (0: one per ~`task_rows` documents, at
    least `workers`) and the `executor` ("local" or "ray", at `ray_address`) change the cost,
    never the bytes written."""

    shard_tokens: int = 100_000_000
    val_fraction: float = field(default=0.01, metadata={"help": (
        "share of the documents (by id hash) held out for validation; 0 turns validation off")})
    # 8 windows of GPT-2's context (1024 + 1 tokens), 32 of the tiny preset's (256 + 1):
    # enough for `hgpt train` to measure a held-out loss on any snapshot large enough
    val_min_tokens: int = field(default=8 * 1025, metadata={"help": (
        "fewest validation tokens: where val_fraction gives fewer, the next documents in id-hash "
        "order are added until validation holds this many (up to val_max_share)")})
    val_max_share: float = field(default=0.5, metadata={"help": (
        "most of the snapshot's tokens that val_min_tokens may move into validation (a smaller "
        "snapshot gets less than the minimum, and a warning)")})
    workers: int = field(default_factory=default_workers)
    read_rows: int = 256  # documents decoded at a time inside a worker
    shuffle_seed: int = 0
    shuffle_bucket_bytes: int = 256 << 20
    task_rows: int = 50_000
    tasks: int = 0
    executor: str = "local"
    ray_address: str | None = None

    def __post_init__(self) -> None:
        if self.shard_tokens < 1:
            raise ValueError(f"shard_tokens must be >= 1, got {self.shard_tokens}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in [0, 1), got {self.val_fraction}")
        if not isinstance(self.val_min_tokens, int) or self.val_min_tokens < 0:
            raise ValueError(f"val_min_tokens must be an integer >= 0, got {self.val_min_tokens!r}")
        if not 0.0 < self.val_max_share < 1.0:
            raise ValueError(f"val_max_share must lie in (0, 1), got {self.val_max_share}")
        if self.workers < 1 or self.read_rows < 1:
            raise ValueError("workers and read_rows must be >= 1")
        if not 0 <= self.shuffle_seed < 2**64:
            raise ValueError(f"shuffle_seed must lie in [0, 2**64), got {self.shuffle_seed}")
        if self.shuffle_bucket_bytes < 1:
            raise ValueError(f"shuffle_bucket_bytes must be >= 1, got {self.shuffle_bucket_bytes}")
        if self.task_rows < 1 or self.tasks < 0:
            raise ValueError(f"task_rows must be >= 1 and tasks >= 0, got {self.task_rows}, {self.tasks}")
        check_executor(self.executor, self.ray_address)

    def output_fields(self) -> dict:
        """The settings the output depends on (the fingerprint); the others only cut the work."""
        return {k: v for k, v in asdict(self).items()
                if k in ("shard_tokens", "val_fraction", "val_min_tokens", "val_max_share", "shuffle_seed")}


@dataclass
class TokenizeResult:
    docs: int
    val_docs: int
    train_docs: int
    val_tokens: int
    train_tokens: int
    shards: list[str]
    manifest_path: str
    content_hash: str
    fingerprint: str
    shuffle_seed: int = 0
    shuffle_buckets: int = 1  # buckets of the external sort
    largest_bucket_tokens: int = 0  # the most tokens the sort held in memory at once
    val_note: str = ""  # why validation holds fewer than val_min_tokens, if it does
    tasks: int = 1

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def tokens(self) -> int:
        return self.val_tokens + self.train_tokens


def _id_hashes(ids: list[str]) -> np.ndarray:
    """Each document's validation hash (uint64, unkeyed: the split does not depend on the
    shuffle seed)."""
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest(), "big") for i in ids),
        dtype=np.uint64, count=len(ids))


def shuffle_keys(ids: list[str], seed: int) -> np.ndarray:
    """Each document's sort key (uint64): a keyed hash of its id, so the order depends on the
    ids and the seed only. A different seed gives an unrelated order."""
    key = seed.to_bytes(8, "little")
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8, key=key).digest(), "big")
         for i in ids), dtype=np.uint64, count=len(ids))


_CANDIDATE = np.dtype([("hash", "<u8"), ("tokens", "<i8")])


class ValidationSplit:
    """Chooses the validation documents as they stream past: a prefix of the documents in id-hash
    order (documents sharing a hash, i.e. repeated ids, fall on the same side).

    The prefix is the longer of (a) the hashes below val_fraction * 2**64 and (b) the shortest one
    holding val_min_tokens, cut back to at most val_max_share of all tokens but never below the
    first hash. For (b) only the lowest hashes whose tokens reach the minimum are kept, in a
    max-heap: every document holds at least its EOT token, so at most val_min_tokens + 1 hashes
    are held whatever the corpus size. The result depends on the set of (id, tokens) alone, not
    on the order the documents come in."""

    def __init__(self, cfg: TokenizeConfig):
        self.threshold = int(cfg.val_fraction * 2**64)  # < 2**64: val_fraction < 1
        # val_fraction 0 turns validation off; otherwise at least one document (one token)
        self.need = max(cfg.val_min_tokens, 1) if cfg.val_fraction > 0 else 0
        self.min_tokens, self.max_share = cfg.val_min_tokens, cfg.val_max_share
        self.heap: list[int] = []  # negated hashes: heap[0] is minus the largest held
        self.held: dict[int, int] = {}  # hash -> tokens of its documents
        self.held_tokens = 0
        self.total = 0
        self.last: int | None = None  # the prefix's last hash (inclusive), once finished
        self.note = ""

    def add(self, hashes: np.ndarray, lengths: np.ndarray) -> None:
        self.total += int(lengths.sum())
        if not self.need:
            return
        if self.held_tokens >= self.need:  # only hashes up to the largest held can still enter
            keep = hashes <= np.uint64(-self.heap[0])
            hashes, lengths = hashes[keep], lengths[keep]
        for h, n in zip(hashes.tolist(), lengths.tolist()):
            if self.held_tokens >= self.need and h > -self.heap[0]:
                continue
            if h not in self.held:
                heapq.heappush(self.heap, -h)
                self.held[h] = 0
            self.held[h] += n
            self.held_tokens += n
            while self.held_tokens - self.held[-self.heap[0]] >= self.need:
                self.held_tokens -= self.held.pop(-heapq.heappop(self.heap))

    def candidates(self) -> np.ndarray:
        """The hashes held (with their tokens): those that can still enter the prefix, whatever
        other documents come; with `absorb`, a split can be made of the splits of parts."""
        out = np.empty(len(self.held), _CANDIDATE)
        out["hash"] = list(self.held.keys())
        out["tokens"] = list(self.held.values())
        return out

    def absorb(self, candidates: np.ndarray, total: int) -> None:
        """Take in another split's candidates and its documents' `total` tokens."""
        self.add(candidates["hash"], candidates["tokens"])
        self.total += total - int(candidates["tokens"].sum())

    def finish(self) -> None:
        """Fix the prefix once every document was added."""
        if not self.held:
            return
        groups = sorted(self.held.items())
        cum = np.cumsum([n for _, n in groups])
        k = min(int(np.searchsorted(cum, self.need)), len(groups) - 1)  # shortest reaching need
        cap = int(self.max_share * self.total)
        if cum[k] > cap:
            k = max(0, int(np.searchsorted(cum, cap, side="right")) - 1)
        self.last = groups[k][0]

    def is_val(self, hashes: np.ndarray) -> np.ndarray:
        val = hashes < np.uint64(self.threshold)
        if self.last is not None:
            val |= hashes <= np.uint64(self.last)
        return val

    def check(self, val_tokens: int) -> None:
        """The one-line note (also printed as a warning) where the minimum was not met."""
        if self.need and val_tokens < self.min_tokens:
            self.note = (f"validation holds {val_tokens:,} tokens, fewer than val_min_tokens="
                         f"{self.min_tokens:,}: the snapshot has only {self.total:,} tokens and "
                         f"validation takes at most val_max_share={self.max_share:g} of them")
            print(f"warning: tokenize: {self.note}", file=sys.stderr, flush=True)


def _encode_row_group(task: tuple[str, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Encode the `text` column of one row group: (all tokens, each document preceded by EOT,
    as uint16; tokens per document). The worker reads the parquet itself so the parent never
    touches the text: on two cores the parent's time is taken from the encoders."""
    path, row_group, read_rows = task
    enc = get_encoding()
    out: list[np.ndarray] = []
    lengths: list[int] = []
    eot = np.array([EOT_TOKEN], dtype=np.uint32)
    pf = pq.ParquetFile(path)
    for batch in pf.iter_batches(batch_size=read_rows, row_groups=[row_group], columns=["text"]):
        pieces = []
        for text in batch.column(0).to_pylist():
            # encode() with no special tokens allowed nor disallowed is encode_ordinary, but hands
            # back a numpy buffer instead of a Python list (a third faster end to end)
            toks = enc.encode_to_numpy(text, allowed_special=set(), disallowed_special=())
            pieces.append(eot)
            pieces.append(toks)
            lengths.append(toks.size + 1)
        if pieces:  # narrow to uint16 per batch: the row group never sits in memory as uint32
            out.append(np.concatenate(pieces).astype(np.uint16))
        del pieces, batch
    tokens = np.concatenate(out) if out else np.empty(0, np.uint16)
    return tokens, np.asarray(lengths, dtype=np.int64)


def _gather(tokens: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The token runs tokens[starts[i] : starts[i] + lengths[i]], back to back, in one gather."""
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, tokens.dtype)
    run_start = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    index = np.arange(total, dtype=np.int64) + np.repeat(starts - run_start, lengths)
    return tokens[index]


_RECORD = np.dtype([("key", "<u8"), ("row", "<i8"), ("n_tokens", "<i8"), ("val_hash", "<u8")])


def bucket_bits(docs_parquet: Path, bucket_bytes: int) -> int:
    """k such that 2**k buckets each get about `bucket_bytes` of the input's text (estimated
    from the parquet metadata's uncompressed size of the text column; at most 2**16 buckets)."""
    meta = pq.ParquetFile(docs_parquet).metadata
    col = meta.schema.to_arrow_schema().get_field_index("text")
    text_bytes = sum(meta.row_group(i).column(col).total_uncompressed_size
                     for i in range(meta.num_row_groups))
    buckets = -(-text_bytes // bucket_bytes)
    return min(16, max(0, (buckets - 1).bit_length()))


class _Buckets:
    """Step 1 of the external sort, one task's: documents appended, by the top bits of their key,
    to bucket files (tokens, records, ids, source files). Files are opened per append, so the
    number of buckets is not limited by open descriptors."""

    def __init__(self, root: Path, bits: int):
        self.root, self.bits = root, bits
        root.mkdir(parents=True, exist_ok=True)

    def path(self, b: int, kind: str) -> Path:
        return self.root / f"{b:05d}.{kind}"

    def add(self, tokens, lengths, keys, rows, val_hashes, ids: pa.Array, sources: pa.Array) -> None:
        bucket = (keys >> np.uint64(64 - self.bits)).astype(np.int64) if self.bits else \
            np.zeros(len(keys), np.int64)
        order = np.argsort(bucket, kind="stable")
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
        cuts = np.flatnonzero(np.diff(bucket[order])) + 1
        for sel in np.split(order, cuts) if len(order) else []:
            b = int(bucket[sel[0]])
            rec = np.empty(len(sel), _RECORD)
            rec["key"], rec["row"], rec["n_tokens"] = keys[sel], rows[sel], lengths[sel]
            rec["val_hash"] = val_hashes[sel]
            take = pa.array(sel)
            for kind, data in (("tok", _gather(tokens, starts[sel], lengths[sel]).tobytes()),
                               ("rec", rec.tobytes()),
                               ("id", _strings(ids.take(take))),
                               ("src", _strings(sources.take(take)))):
                with open(self.path(b, kind), "ab") as f:
                    f.write(data)

    def read(self, b: int) -> tuple[np.ndarray, np.ndarray, pa.Array, pa.Array] | None:
        """This task's part of bucket `b`, as appended: tokens, records, ids, sources."""
        if not self.path(b, "rec").exists():
            return None
        rec = np.fromfile(self.path(b, "rec"), _RECORD)
        tokens = np.fromfile(self.path(b, "tok"), np.uint16)
        ids, sources = (_read_strings(self.path(b, k), len(rec)) for k in ("id", "src"))
        return tokens, rec, ids, sources


def _sorted_bucket(tasks: list[_Buckets], b: int) -> tuple[np.ndarray, np.ndarray, pa.Array, pa.Array] | None:
    """Step 2's bucket `b`, gathered from every task and sorted by (key, input row): tokens in
    that order, records, ids, sources. Rows are the input's, so the order is a single pass's."""
    parts = [part for part in (t.read(b) for t in tasks) if part is not None]
    if not parts:
        return None
    tokens = np.concatenate([p[0] for p in parts])
    rec = np.concatenate([p[1] for p in parts])
    ids, sources = (pa.concat_arrays([p[k] for p in parts]) for k in (2, 3))
    del parts
    order = np.lexsort((rec["row"], rec["key"]))
    starts = np.concatenate(([0], np.cumsum(rec["n_tokens"])[:-1])).astype(np.int64)
    rec = rec[order]
    tokens = _gather(tokens, starts[order], rec["n_tokens"])
    take = pa.array(order)
    return tokens, rec, ids.take(take), sources.take(take)


_NULL = 0xFFFFFFFF  # length prefix of a null string


def _strings(values: pa.Array) -> bytes:
    """Length-prefixed UTF-8 (a uint32 length, then the bytes) of each string; nulls kept."""
    out = bytearray()
    for v in values.to_pylist():
        raw = b"" if v is None else v.encode()
        out += (_NULL if v is None else len(raw)).to_bytes(4, "little") + raw
    return bytes(out)


def _read_strings(path: Path, n: int) -> pa.Array:
    data, pos, out = path.read_bytes(), 0, []
    for _ in range(n):
        size = int.from_bytes(data[pos : pos + 4], "little")
        if size == _NULL:
            out.append(None)
            pos += 4
            continue
        out.append(data[pos + 4 : pos + 4 + size].decode())
        pos += 4 + size
    return pa.array(out, pa.string())


class _ManifestWriter:
    """Manifest rows in row groups of exactly `group_rows` (the last holds the rest), whatever
    sizes they arrive in: the parquet bytes then do not depend on the sort's bucket count.
    The training split's rows come first, then the validation split's (buffered on disk in
    the staging directory meanwhile)."""

    def __init__(self, path: Path, schema: pa.Schema, group_rows: int = 65536):
        self.schema, self.group_rows = schema, group_rows
        self.writer = atomic.parquet_writer(path, schema, compression="zstd")
        self.pending: list[pa.Table] = []
        self.rows = 0

    def write(self, rows: dict | pa.Table) -> None:
        self.pending.append(rows if isinstance(rows, pa.Table) else pa.table(rows, schema=self.schema))
        self.rows += self.pending[-1].num_rows
        if self.rows >= self.group_rows:
            table = pa.concat_tables(self.pending)
            full = table.num_rows // self.group_rows * self.group_rows
            # one chunk per column: the pages written must not depend on how rows arrived
            self.writer.write_table(table.slice(0, full).combine_chunks(),
                                    row_group_size=self.group_rows)
            self.pending, self.rows = [table.slice(full)], table.num_rows - full

    def close(self) -> None:
        if self.rows:
            self.writer.write_table(pa.concat_tables(self.pending).combine_chunks())
        self.writer.close()


class _SplitWriter:
    """Shards of one split, each filled to exactly `shard_tokens` before the next is opened."""

    def __init__(self, stage: Path, split: str, shard_tokens: int):
        self.stage, self.split, self.shard_tokens = stage, split, shard_tokens
        self.writer: ShardWriter | None = None
        self.names: list[str] = []
        self.tokens = 0
        self.docs = 0

    def add_docs(self, tokens: np.ndarray, lengths: np.ndarray) -> dict[str, np.ndarray]:
        """Append documents (their tokens back to back); returns their manifest pieces as
        arrays: doc (position in `lengths`), part, shard (index), offset, n_tokens."""
        S = self.shard_tokens
        starts = self.tokens + np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
        ends = starts + lengths
        first, last = starts // S, (ends - 1) // S
        n_pieces = last - first + 1
        doc = np.repeat(np.arange(len(lengths)), n_pieces)
        part = np.arange(len(doc)) - np.repeat(np.cumsum(n_pieces) - n_pieces, n_pieces)
        shard = first[doc] + part
        piece_start = np.maximum(starts[doc], shard * S)
        piece_end = np.minimum(ends[doc], (shard + 1) * S)
        self._write(tokens)
        self.docs += len(lengths)
        return {"doc": doc, "part": part, "shard": shard, "offset": piece_start - shard * S,
                "n_tokens": piece_end - piece_start}

    def _write(self, tokens: np.ndarray) -> None:
        pos = 0
        while pos < tokens.size:
            if self.writer is None or self.writer.n_tokens >= self.shard_tokens:
                if self.writer is not None:
                    self.writer.close()
                self.names.append(f"{self.split}_{len(self.names):06d}.bin")
                self.writer = ShardWriter(self.stage / self.names[-1])
            take = min(tokens.size - pos, self.shard_tokens - self.writer.n_tokens)
            self.writer.write(tokens[pos : pos + take])
            pos += take
        self.tokens += tokens.size

    def shard_name(self, index: int) -> str:
        return f"{self.split}_{index:06d}.bin"

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _content_hash(stage: Path, names: list[str]) -> str:
    h = hashlib.sha256()
    for name in sorted(names):
        h.update(name.encode() + b"\0")
        h.update(bytes.fromhex(atomic.sha256_file(stage / name)))
    return h.hexdigest()


@recorded(lambda job: f"tokens/{job['task']:05d}.done.json")
def _tokenize_task(job: dict) -> dict:
    """Encode one slice of row groups into this task's sort buckets (tokens/<task>/) and keep its
    validation candidates (tokens/<task>/val.npy). The record, written last, is the commit: a
    crashed attempt's appends are removed before the task starts again."""
    cfg = TokenizeConfig(**job["cfg"])
    i, (g0, g1, r0, r1) = job["task"], job["slice"]
    root = Path(job["work"]) / "tokens" / f"{i:05d}"
    shutil.rmtree(root, ignore_errors=True)
    buckets = _Buckets(root, job["bits"])
    val_split = ValidationSplit(cfg)
    pf = pq.ParquetFile(job["docs"])
    row = r0
    for g in range(g0, g1):
        tokens, lengths = _encode_row_group((job["docs"], g, cfg.read_rows))
        meta = pf.read_row_group(g, columns=["id", "source_file"])
        if meta.num_rows != len(lengths):
            raise AssertionError(f"tokenize task {i}: row group {g} has {meta.num_rows} ids, "
                                 f"{len(lengths)} documents encoded")
        ids, sources = meta["id"].combine_chunks(), meta["source_file"].combine_chunks()
        rows = row + np.arange(len(lengths), dtype=np.int64)
        row += len(lengths)
        id_list = ids.to_pylist()
        val_hashes = _id_hashes(id_list)
        val_split.add(val_hashes, lengths)
        buckets.add(tokens, lengths, shuffle_keys(id_list, cfg.shuffle_seed), rows, val_hashes, ids, sources)
    if row != r1:
        raise AssertionError(f"tokenize task {i} lost documents: rows {r0}..{r1}, {row - r0} read")
    np.save(root / "val.npy", val_split.candidates(), allow_pickle=False)
    return {"task": i, "docs": row - r0, "tokens": val_split.total}


def tokenize_documents(docs_parquet: str | os.PathLike, out_dir: str | os.PathLike,
                       cfg: TokenizeConfig = TokenizeConfig(), progress=None) -> TokenizeResult:
    """Tokenize every document of `docs_parquet` (needs columns text, id, source_file) into
    `out_dir/{val,train}_NNNNNN.bin` + `manifest.parquet`. Skips a finished identical run."""
    docs_parquet, out_dir = Path(docs_parquet), Path(out_dir)
    fp = atomic.fingerprint(stage=STAGE_VERSION, input=atomic.sha256_file(docs_parquet), cfg=cfg.output_fields())
    done = atomic.completed(out_dir, fp)
    if done is not None:
        return TokenizeResult(**done["result"])

    pf = pq.ParquetFile(docs_parquet)
    missing = {"text", "id", "source_file"} - set(pf.schema_arrow.names)
    if missing:
        raise ValueError(f"{docs_parquet}: missing column(s) {', '.join(sorted(missing))}")
    bits = bucket_bits(docs_parquet, cfg.shuffle_bucket_bytes)
    plan = row_group_slices(docs_parquet, cfg.tasks, cfg.workers, cfg.task_rows)
    run_id = atomic.fingerprint(fp=fp, plan=plan, bits=bits, read_rows=cfg.read_rows)[:16]
    with atomic.staged_dir(out_dir) as stage, atomic.work_dir(out_dir, run_id) as work:
        # step 1, in the tasks: encode and distribute the documents over each task's buckets.
        # Absolute paths: a Ray worker need not share this process's working directory.
        common = {"work": str(work.absolute()), "docs": str(docs_parquet.absolute()), "bits": bits,
                  "cfg": asdict(cfg)}
        jobs = [{**common, "task": i, "slice": list(sl)} for i, sl in enumerate(plan)]
        val_split = ValidationSplit(cfg)
        with open_executor(cfg.executor, min(cfg.workers, len(jobs)), cfg.ray_address) as ex:
            for job, rec in zip(jobs, ex.map(_tokenize_task, jobs)):
                root = work / "tokens" / f"{job['task']:05d}"
                val_split.absorb(np.load(root / "val.npy", allow_pickle=False), rec["tokens"])
                if progress is not None:
                    progress.update(rec["docs"])
        if sum(r1 - r0 for _, _, r0, r1 in plan) != pf.metadata.num_rows:
            raise AssertionError(f"tokenize: the tasks' slices do not cover {docs_parquet}")
        val_split.finish()  # every document's tokens are known: the validation prefix is fixed
        # step 2: buckets in key order, each gathered from the tasks and sorted, into the shards
        tasks = [_Buckets(work / "tokens" / f"{i:05d}", bits) for i in range(len(jobs))]
        writers = {s: _SplitWriter(stage, s, cfg.shard_tokens) for s in ("val", "train")}
        schema = manifest_schema(cfg.shuffle_seed)
        # the validation rows wait in the stage itself: its writers are the ones closed quietly
        # if the stage fails (a full disk), and it is removed before the stage is published
        val_manifest = stage / ".val-manifest.parquet"
        manifest = {"train": _ManifestWriter(stage / "manifest.parquet", schema),
                    "val": _ManifestWriter(val_manifest, schema)}
        largest = 0
        for b in range(2**bits):
            bucket = _sorted_bucket(tasks, b)
            if bucket is None:
                continue
            tokens, rec, ids, sources = bucket
            largest = max(largest, len(tokens))
            doc_is_val = val_split.is_val(rec["val_hash"])
            token_is_val = np.repeat(doc_is_val, rec["n_tokens"])
            for name, doc_mask, tok_mask in (("val", doc_is_val, token_is_val),
                                             ("train", ~doc_is_val, ~token_is_val)):
                if not doc_mask.any():
                    continue
                w = writers[name]
                pieces = w.add_docs(tokens[tok_mask], rec["n_tokens"][doc_mask])
                doc_pos = np.flatnonzero(doc_mask)[pieces["doc"]]
                take = pa.array(doc_pos)
                manifest[name].write({
                    "split": pa.array([name] * len(doc_pos), pa.string()),
                    "shard": pa.array([w.shard_name(i) for i in pieces["shard"].tolist()], pa.string()),
                    "offset": pieces["offset"],
                    "n_tokens": pieces["n_tokens"],
                    "doc_index": rec["row"][doc_pos],
                    "id": ids.take(take),
                    "part": pieces["part"].astype(np.int32),
                    "doc_tokens": rec["n_tokens"][doc_pos],
                    "source_file": sources.take(take),
                    "shuffle_key": rec["key"][doc_pos],
                })
            del tokens, rec, ids, sources, bucket
        manifest["val"].close()
        for batch in pq.ParquetFile(val_manifest).iter_batches(65536):
            manifest["train"].write(pa.Table.from_batches([batch], schema=schema))
        manifest["train"].close()
        val_manifest.unlink()
        for w in writers.values():
            w.close()
        shards = writers["val"].names + writers["train"].names
        val_split.check(writers["val"].tokens)
        result = TokenizeResult(
            docs=writers["val"].docs + writers["train"].docs,
            val_docs=writers["val"].docs,
            train_docs=writers["train"].docs,
            val_tokens=writers["val"].tokens,
            train_tokens=writers["train"].tokens,
            shards=[str(out_dir / s) for s in shards],
            manifest_path=str(out_dir / "manifest.parquet"),
            content_hash=_content_hash(stage, [*shards, "manifest.parquet"]),
            fingerprint=fp,
            shuffle_seed=cfg.shuffle_seed,
            shuffle_buckets=2**bits,
            largest_bucket_tokens=largest,
            val_note=val_split.note,
            tasks=len(jobs),
        )
        if result.docs != pf.metadata.num_rows or result.tokens != val_split.total:
            raise AssertionError(f"tokenize lost documents ({pf.metadata.num_rows} rows in): {result.to_dict()}")
        atomic.write_json_atomic(stage / atomic.SUCCESS, {"fingerprint": fp, "result": result.to_dict()})
    return result


def main(argv: list[str] | None = None) -> int:
    """`python -m pipelines.tokenize --docs D --out O`: the stage alone, in a process that
    imports nothing else (the `hgpt` entry point also loads torch for the model commands)."""
    ap = argparse.ArgumentParser(prog="python -m pipelines.tokenize")
    ap.add_argument("--docs", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--shard-tokens", type=int, default=TokenizeConfig.shard_tokens)
    helps = {f.name: f.metadata.get("help") for f in fields(TokenizeConfig)}
    ap.add_argument("--val-fraction", type=float, default=TokenizeConfig.val_fraction,
                    help=helps["val_fraction"])
    ap.add_argument("--val-min-tokens", type=int, default=TokenizeConfig.val_min_tokens,
                    help=helps["val_min_tokens"])
    ap.add_argument("--val-max-share", type=float, default=TokenizeConfig.val_max_share,
                    help=helps["val_max_share"])
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--shuffle-seed", type=int, default=TokenizeConfig.shuffle_seed,
                    help="seed of the document order (recorded in the manifest)")
    args = ap.parse_args(argv)
    cfg = TokenizeConfig(shard_tokens=args.shard_tokens, val_fraction=args.val_fraction,
                         val_min_tokens=args.val_min_tokens, val_max_share=args.val_max_share,
                         shuffle_seed=args.shuffle_seed,
                         **({"workers": args.workers} if args.workers else {}))
    print(json.dumps(tokenize_documents(args.docs, args.out, cfg).to_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Stage 3: documents -> GPT-2 token shards in llm.c's format, plus a parquet manifest.

Each document becomes `[<|endoftext|>] + encode_ordinary(text)`; the literal text
"<|endoftext|>" inside a page stays ordinary text. Shards hold `shard_tokens` tokens each (the
last of a split holds the rest), documents run on across shard boundaries as in llm.c, and the
manifest has one row per piece: split, shard, offset, tokens, document id, source file.

Validation documents are chosen by a hash of their id (`val_fraction` of them), so the split is
the same whatever the order or the number of worker processes; a snapshot too small to get any
still gets its one lowest-hash document. Each worker task is one parquet row group (the stages
before write groups of at most 512 documents, which bounds memory); the parent only writes.

    hgpt data tokenize --docs /tmp/hgpt/dedup/kept.parquet --out /tmp/hgpt/shards
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from model.tokenizer import EOT_TOKEN, get_encoding  # model/__init__ is lazy: no torch here
from pipelines import atomic
from pipelines.filtering import default_workers
from pipelines.parallel import ordered_map
from pipelines.shard_format import ShardWriter

STAGE_VERSION = "tokenize-1"
MANIFEST_SCHEMA = pa.schema(
    [
        ("split", pa.string()),
        ("shard", pa.string()),
        ("offset", pa.int64()),  # first token of this piece inside the shard
        ("n_tokens", pa.int64()),  # tokens of this piece (EOT included in a document's first piece)
        ("doc_index", pa.int64()),  # row of the document in the input parquet
        ("id", pa.string()),
        ("part", pa.int32()),  # 0 for a document's first piece, 1 for its continuation, ...
        ("doc_tokens", pa.int64()),
        ("source_file", pa.string()),
    ]
)


@dataclass(frozen=True)
class TokenizeConfig:
    """Shard size, validation split and parallelism."""

    shard_tokens: int = 100_000_000
    val_fraction: float = 0.01
    workers: int = field(default_factory=default_workers)
    read_rows: int = 256  # documents decoded at a time inside a worker

    def __post_init__(self) -> None:
        if self.shard_tokens < 1:
            raise ValueError(f"shard_tokens must be >= 1, got {self.shard_tokens}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in [0, 1), got {self.val_fraction}")
        if self.workers < 1 or self.read_rows < 1:
            raise ValueError("workers and read_rows must be >= 1")


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

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def tokens(self) -> int:
        return self.val_tokens + self.train_tokens


def _id_hash(doc_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "big")


def select_validation(docs_parquet: Path, val_fraction: float) -> set[int]:
    """Rows that go to validation: those whose id hash falls below `val_fraction`; at least one."""
    threshold = int(val_fraction * 2**64)
    chosen: set[int] = set()
    best = (2**64, -1)
    row = 0
    for batch in pq.ParquetFile(docs_parquet).iter_batches(batch_size=65536, columns=["id"]):
        for doc_id in batch.column(0).to_pylist():
            h = _id_hash(doc_id)
            if h < threshold:
                chosen.add(row)
            best = min(best, (h, row))
            row += 1
    if not chosen and row > 0 and val_fraction > 0:
        chosen.add(best[1])
    return chosen


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


def tokenize_documents(docs_parquet: str | os.PathLike, out_dir: str | os.PathLike,
                       cfg: TokenizeConfig = TokenizeConfig(), progress=None) -> TokenizeResult:
    """Tokenize every document of `docs_parquet` (needs columns text, id, source_file) into
    `out_dir/{val,train}_NNNNNN.bin` + `manifest.parquet`. Skips a finished identical run."""
    docs_parquet, out_dir = Path(docs_parquet), Path(out_dir)
    cfg_fp = {k: v for k, v in asdict(cfg).items() if k in ("shard_tokens", "val_fraction")}
    fp = atomic.fingerprint(stage=STAGE_VERSION, input=atomic.sha256_file(docs_parquet), cfg=cfg_fp)
    done = atomic.completed(out_dir, fp)
    if done is not None:
        return TokenizeResult(**done["result"])

    pf = pq.ParquetFile(docs_parquet)
    missing = {"text", "id", "source_file"} - set(pf.schema_arrow.names)
    if missing:
        raise ValueError(f"{docs_parquet}: missing column(s) {', '.join(sorted(missing))}")
    val_rows = np.array(sorted(select_validation(docs_parquet, cfg.val_fraction)), dtype=np.int64)
    with atomic.staged_dir(out_dir) as stage:
        writers = {s: _SplitWriter(stage, s, cfg.shard_tokens) for s in ("val", "train")}
        manifest_w = atomic.parquet_writer(stage / "manifest.parquet", MANIFEST_SCHEMA, compression="zstd")
        tasks = [(str(docs_parquet), rg, cfg.read_rows) for rg in range(pf.num_row_groups)]
        first_row = 0
        for rg, (tokens, lengths) in enumerate(ordered_map(_encode_row_group, tasks, cfg.workers)):
            meta = pf.read_row_group(rg, columns=["id", "source_file"])
            rows = first_row + np.arange(len(lengths), dtype=np.int64)
            first_row += len(lengths)
            is_val = np.isin(rows, val_rows)
            token_is_val = np.repeat(is_val, lengths)
            for split, doc_mask, tok_mask in (("val", is_val, token_is_val), ("train", ~is_val, ~token_is_val)):
                if not doc_mask.any():
                    continue
                w = writers[split]
                pieces = w.add_docs(tokens[tok_mask], lengths[doc_mask])
                doc_pos = np.flatnonzero(doc_mask)[pieces["doc"]]
                take = pa.array(doc_pos)
                manifest_w.write_table(pa.table({
                    "split": pa.array([split] * len(doc_pos), pa.string()),
                    "shard": pa.array([w.shard_name(i) for i in pieces["shard"].tolist()], pa.string()),
                    "offset": pieces["offset"],
                    "n_tokens": pieces["n_tokens"],
                    "doc_index": rows[doc_pos],
                    "id": meta["id"].take(take),
                    "part": pieces["part"].astype(np.int32),
                    "doc_tokens": lengths[doc_pos],
                    "source_file": meta["source_file"].take(take),
                }, schema=MANIFEST_SCHEMA))
            if progress is not None:
                progress.update(len(lengths))
        for w in writers.values():
            w.close()
        manifest_w.close()
        shards = writers["val"].names + writers["train"].names
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
        )
        atomic.write_json_atomic(stage / atomic.SUCCESS, {"fingerprint": fp, "result": result.to_dict()})
    return result


def main(argv: list[str] | None = None) -> int:
    """`python -m pipelines.tokenize --docs D --out O`: the stage alone, in a process that
    imports nothing else (the `hgpt` entry point also loads torch for the model commands)."""
    ap = argparse.ArgumentParser(prog="python -m pipelines.tokenize")
    ap.add_argument("--docs", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--shard-tokens", type=int, default=TokenizeConfig.shard_tokens)
    ap.add_argument("--val-fraction", type=float, default=TokenizeConfig.val_fraction)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args(argv)
    cfg = TokenizeConfig(shard_tokens=args.shard_tokens, val_fraction=args.val_fraction,
                         **({"workers": args.workers} if args.workers else {}))
    print(json.dumps(tokenize_documents(args.docs, args.out, cfg).to_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Stage 2: remove exact and near duplicates, as a parallel, disk-based pipeline (datatrove's way).

Exact: a 64-bit hash of the normalised text. Near: MinHash with FineWeb's parameters (word
5-grams, 14 buckets x 8 hashes); two documents are near duplicates when all 8 hashes of any one
bucket agree (LSH), and duplicates are taken transitively (a cluster is a connected component).
Of each cluster the document with the smallest index in `kept.parquet` (source order) is kept; the
others are recorded in `duplicates.parquet` with the kept one they duplicate.

Normalisation, shingling, hashing and the MinHash permutations are datatrove's (simplify_text,
xxhash64 of each space-joined 5-gram's UTF-8, the same seeded parameters), so a document gets the same
signature as under datatrove's MinhashDedupSignature; tests/pipelines/test_data_dedup_datatrove.py
checks that the decisions agree.

The work is done by tasks over slices of the input, each with its own completion record in a work
directory beside the output, so a rerun after a crash redoes only the tasks that did not finish:

1. signatures, task i of n (a range of row groups): per bucket (and one for the exact hash), runs
   of (key, document index) sorted by key, at most `run_rows` entries held at a time;
2. matching, one task per bucket: a k-way merge of every run of that bucket (and, across
   snapshots, of the earlier snapshots' index); each document sharing a key with the group's first
   (smallest index) gives a pair, written to disk;
3. clusters: a union-find over the pairs, whose root is the smallest index; it holds one entry
   per document that has a duplicate (as datatrove's does), never the corpus;
4. removal, task i of n: each task filters its slice against the sorted removal file and writes its
   part; the parts are merged in task order into row groups of fixed size, so the output is
   byte-identical whatever the number of tasks and workers.

Conservation (documents in = kept + exact + near) is checked per task and for the snapshot.

Scope. By default a snapshot is deduplicated on its own (FineWeb deduplicated each dump on its
own and found that deduplicating across dumps made the data worse). With `cross_snapshot` it is
also compared with every snapshot registered in the index before it: their signature files are
merged from disk, bucket by bucket, like this snapshot's own runs. Every snapshot deduplicated
with an index directory writes its signatures there (`<key>.parquet`, sorted per bucket, and
`<key>.ids.parquet`) and is then appended to `order.json`. A snapshot is compared only with
snapshots registered before it, so a rerun gives the same output (it never matches itself).
Cross-snapshot runs side by side take turns on the index (`index_dir/.lock`, held from reading
`order.json` to registering), so the one that waits compares with the other's finished index,
exactly as if they had run one after the other; a snapshot is registered only once its files are
complete, and `order.json` is replaced atomically.

    hgpt data dedup --kept /tmp/hgpt/filtered/kept.parquet --out /tmp/hgpt/dedup [--index /tmp/hgpt/index]
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import unicodedata
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import regex
import xxhash  # installed with datasets (a dependency); datatrove's MinHash hashes shingles with it

from pipelines import atomic
from pipelines.filtering import _PARQUET_OPTS, KEPT_SCHEMA
from pipelines.locking import LockHeld, exclusive_lock
from pipelines.executors import check_executor, open_executor, read_record, recorded, row_group_slices

STAGE_VERSION = "dedup-2"
DUP_SCHEMA = pa.schema(
    [("id", pa.string()), ("source_file", pa.string()), ("source_row", pa.int64()),
     ("kind", pa.string()), ("duplicate_of", pa.string())]
)
# One snapshot's signatures in the index: bucket -1 is the exact hash; rows sorted by
# (bucket, hash) and each row group holds one bucket, so a merge reads a bucket's row groups only.
_INDEX_SCHEMA = pa.schema([("bucket", pa.int16()), ("hash", pa.uint64()), ("doc", pa.int64())])
_IDS_SCHEMA = pa.schema([("id", pa.string())])
_RUN = np.dtype([("k", "<u8"), ("i", "<i8")])
_PRIME = np.uint64((1 << 61) - 1)
_SIXTY_ONE = np.uint64(61)
_ROWS = 128
_SNAP_SHIFT = 40  # global document index = snapshot position << 40 | row (2^40 rows per snapshot)
_EXACT = "exact"
_KIND = {1: "exact", 2: "near"}
OUTPUT_ROW_GROUP = 2048  # rows per row group of kept/duplicates.parquet, whatever the tasks


@dataclass(frozen=True)
class DedupConfig:
    """MinHash parameters (FineWeb's by default), scope, and the settings that bound memory.

    Memory of a signature task: about 16 B x `run_rows` x (num_buckets + 1) plus one batch of
    `batch_rows` documents; of a matching task: 16 B x `merge_rows` in all, whatever the number
    of runs. `tasks` (0: one per ~`task_rows` documents, at least `workers`) and `workers` (1: in
    this process) change how the work is cut, never the output."""

    exact: bool = True
    minhash: bool = True
    n_grams: int = 5
    num_buckets: int = 14
    hashes_per_bucket: int = 8
    seed: int = 1
    cross_snapshot: bool = False
    batch_rows: int = 512
    run_rows: int = 100_000
    merge_rows: int = 1 << 21
    task_rows: int = 50_000
    tasks: int = 0
    workers: int = 1
    executor: str = "local"  # where the tasks run: "local" (processes here) or "ray"
    ray_address: str | None = None  # with "ray": the cluster (None: local or already attached)

    def __post_init__(self) -> None:
        if self.n_grams < 1 or self.num_buckets < 1 or self.hashes_per_bucket < 1:
            raise ValueError("n_grams, num_buckets and hashes_per_bucket must be >= 1")
        if min(self.batch_rows, self.run_rows, self.merge_rows, self.task_rows, self.workers) < 1 or self.tasks < 0:
            raise ValueError("batch_rows, run_rows, merge_rows, task_rows and workers must be >= 1, tasks >= 0")
        check_executor(self.executor, self.ray_address)

    def output_fields(self) -> dict:
        """The settings the output depends on (the fingerprint); the others only cut the work."""
        cut = {"batch_rows", "run_rows", "merge_rows", "task_rows", "tasks", "workers", "executor", "ray_address"}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in cut}


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
    scope: str = "snapshot"
    tasks: int = 1

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def conserved(self) -> bool:
        return self.docs_in == self.kept + self.exact_duplicates + self.near_duplicates


# --- normalisation and signatures (datatrove's simplify_text, shingles and parameters) ----------

# datatrove.utils.text.PUNCTUATION: these characters and the C0/C1 controls become spaces.
_PUNCTUATION = "!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»" + "".join(
    map(chr, (x for a, b in ((0, 9), (11, 13), (13, 32), (127, 160)) for x in range(a, b))))
_NUMBERS_RE = regex.compile(r"\p{Nd}+([.,،٫⎖⎗⎘]{1}\p{Nd}+)?")
# Punctuation to spaces, then runs of spaces to one: in one pass, as one character class.
_ASCII_NUMBERS_RE = re.compile(r"[0-9]+([.,][0-9]+)?")  # the same on ASCII text, and faster
# Punctuation to spaces: bytes.translate for ASCII text, a character class otherwise (the standard
# library's re: the regex module is several times slower on a class this large).
_ASCII_PUNCT = bytes.maketrans(bytes(c for c in range(128) if chr(c) in _PUNCTUATION),
                               b" " * sum(chr(c) in _PUNCTUATION for c in range(128)))
_PUNCT_RE = re.compile("[" + "".join(re.escape(c) for c in _PUNCTUATION) + "]")
_MARK_RE = regex.compile(r"\p{Mn}+")
# datatrove splits the normalised text into words with spaCy's English tokenizer. With punctuation
# gone, what it still splits inside a space-separated chunk is a unit after a digit ("0kg" -> "0"
# "kg": its suffix rule and unit list, lowercase after normalisation) and its exceptions below.
_UNITS = ("km|km²|km³|m|m²|m³|dm|dm²|dm³|cm|cm²|cm³|mm|mm²|mm³|ha|µm|nm|yd|in|ft|kg|g|mg|µg|t|lb|oz|"
          "kmh|mph|mbar|mb|kb|gb|tb")
_UNIT_RE = re.compile(rf"0({_UNITS})(?= |$)")  # every digit run is "0" after normalisation
# spaCy's English exceptions that split a word with no apostrophe ("dont" -> "do" "nt"), as
# word=token+token (the ones that can survive normalisation: letters only).
_SPLITS = {
    word: tokens.replace("+", " ") for word, tokens in (item.split("=") for item in (
    "aint=ai+nt arent=are+nt cannot=can+not cant=ca+nt cantve=ca+nt+ve couldnt=could+nt "
    "couldntve=could+nt+ve couldve=could+ve darent=dare+nt didnt=did+nt didntve=did+nt+ve "
    "doesnt=does+nt doesntve=does+nt+ve dont=do+nt dontve=do+nt+ve gonna=gon+na gotta=got+ta "
    "hadnt=had+nt hadntve=had+nt+ve hasnt=has+nt havent=have+nt hed=he+d hedve=he+d+ve "
    "hellve=he+ll+ve hes=he+s howd=how+d howdve=how+d+ve howll=how+ll howllve=how+ll+ve howre=how+re "
    "hows=how+s howve=how+ve id=i+d idve=i+d+ve illve=i+ll+ve im=i+m ima=i+m+a isnt=is+nt itd=it+d "
    "itdve=it+d+ve itll=it+ll itllve=it+ll+ve ive=i+ve maynt=may+nt mayntve=may+nt+ve "
    "mightnt=might+nt mightntve=might+nt+ve mightve=might+ve mustnt=must+nt mustntve=must+nt+ve "
    "mustve=must+ve neednt=need+nt needntve=need+nt+ve notve=not+ve oughtnt=ought+nt "
    "oughtntve=ought+nt+ve shant=sha+nt shantve=sha+nt+ve shedve=she+d+ve shellve=she+ll+ve "
    "shes=she+s shouldnt=should+nt shouldntve=should+nt+ve shouldve=should+ve thatd=that+d "
    "thatdve=that+d+ve thatll=that+ll thatllve=that+ll+ve thats=that+s thered=there+d "
    "theredve=there+d+ve therell=there+ll therellve=there+ll+ve therere=there+re theres=there+s "
    "thereve=there+ve thesed=these+d thesedve=these+d+ve thesell=these+ll thesellve=these+ll+ve "
    "thesere=these+re theseve=these+ve theyd=they+d theydve=they+d+ve theyll=they+ll "
    "theyllve=they+ll+ve theyre=they+re theyve=they+ve thisd=this+d thisdve=this+d+ve thisll=this+ll "
    "thisllve=this+ll+ve thiss=this+s thosed=those+d thosedve=those+d+ve thosell=those+ll "
    "thosellve=those+ll+ve thosere=those+re thoseve=those+ve wasnt=was+nt wed=we+d wedve=we+d+ve "
    "wellve=we+ll+ve werent=were+nt weve=we+ve whatd=what+d whatdve=what+d+ve whatll=what+ll "
    "whatllve=what+ll+ve whatre=what+re whats=what+s whatve=what+ve whend=when+d whendve=when+d+ve "
    "whenll=when+ll whenllve=when+ll+ve whenre=when+re whens=when+s whenve=when+ve whered=where+d "
    "wheredve=where+d+ve wherell=where+ll wherellve=where+ll+ve wherere=where+re wheres=where+s "
    "whereve=where+ve whod=who+d whodve=who+d+ve wholl=who+ll whollve=who+ll+ve whos=who+s "
    "whove=who+ve whyd=why+d whydve=why+d+ve whyll=why+ll whyllve=why+ll+ve whyre=why+re whys=why+s "
    "whyve=why+ve wont=wo+nt wontve=wo+nt+ve wouldnt=would+nt wouldntve=would+nt+ve wouldve=would+ve "
    "yall=y+all youd=you+d youdve=you+d+ve youll=you+ll youllve=you+ll+ve youre=you+re youve=you+ve "
    ).split())
}
# Quotes, currency signs and symbols that spaCy peels off a word's ends and datatrove's punctuation
# list leaves in place.
_EDGE = ("‘‚『』〔〕⟦⟧¿¡·।،۔؛٪§£€¥฿₽﷼₴\u20a0-\u20bf\u00a6\u00a9\u00ae\u00b0\u2100-\u214f\u2190-\u21ff"
         "\u2300-\u23ff\u2500-\u27bf\u2800-\u28ff\u2b00-\u2bff\U0001f000-\U0001faff")
_EDGE_ANY = re.compile(rf"[{_EDGE}]")
_EDGE_RE = re.compile(rf"(?<![^ ])([{_EDGE}])(?=[^ ])|(?<=[^ ])([{_EDGE}])(?![^ ])")


def words_text(normalised: str) -> str:
    """The normalised text with its words as datatrove's word tokenizer (spaCy's) gives them,
    space-separated: its exceptions and its unit suffix are the only splits left to make."""
    words = normalised.split(" ")
    text = normalised if _SPLITS.keys().isdisjoint(words) else " ".join(_SPLITS.get(w, w) for w in words)
    if not text.isascii() and _EDGE_ANY.search(text):
        text = _EDGE_RE.sub(lambda m: f"{m.group(1)} " if m.group(1) else f" {m.group(2)}", text)
    return _UNIT_RE.sub(r"0 \1", text) if "0" in text else text


def normalise(text: str) -> str:
    """Lowercase, numbers folded to 0, punctuation and accents dropped, whitespace folded: the
    text two copies of a page share even when boilerplate spacing or casing differs."""
    text = text.lower()
    if text.isascii():
        # str.split() folds the same whitespace as datatrove's \s+ (and strips the ends)
        return " ".join(_ASCII_NUMBERS_RE.sub("0", text).encode().translate(_ASCII_PUNCT).decode().split())
    text = " ".join(_PUNCT_RE.sub(" ", _NUMBERS_RE.sub("0", text)).split())
    return _MARK_RE.sub("", unicodedata.normalize("NFD", text)).strip()


def exact_hash(text: str) -> int:
    return xxhash.xxh64_intdigest(normalise(text).encode())


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: folds a bucket's 8 hashes into one well-spread 64-bit key."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class MinHasher:
    """Signatures of word n-gram sets; a bucket's key is its 8 hashes folded into 64 bits (a chance
    collision of two different tuples has probability ~2^-64 per pair)."""

    def __init__(self, cfg: DedupConfig):
        self.cfg = cfg
        n = cfg.num_buckets * cfg.hashes_per_bucket
        gen = np.random.RandomState(cfg.seed)  # datatrove's generator and draws, in its order
        self.a = gen.randint(1, _PRIME, dtype=np.uint64, size=(1, n))
        self.b = gen.randint(0, _PRIME, dtype=np.uint64, size=(1, n))
        self._v, self._hi = np.empty((_ROWS, n), np.uint64), np.empty((_ROWS, n), np.uint64)

    def shingles(self, normalised: str | bytes) -> np.ndarray:
        """xxhash64 of the UTF-8 of each n-gram of words: a slice of the normalised text, whose
        words are separated by single spaces (the same bytes as datatrove's " ".join)."""
        data = normalised.encode() if isinstance(normalised, str) else normalised
        n = self.cfg.n_grams
        spaces = np.flatnonzero(np.frombuffer(data, np.uint8) == 32)
        count = (len(spaces) + 1 if data else 0) - n + 1
        # Fewer words than n give no n-gram and no signature (as in datatrove): such a document
        # is never a near duplicate (an identical one is still an exact duplicate).
        if count <= 0:
            return np.empty(0, np.uint64)
        starts = np.concatenate([[0], spaces[: count - 1] + 1]).tolist()
        ends = np.concatenate([spaces[n - 1:], [len(data)]]).tolist()
        h = xxhash.xxh64_intdigest
        return np.fromiter((h(data[s:e]) for s, e in zip(starts, ends)), dtype=np.uint64, count=count)

    def signature(self, normalised: str | bytes) -> np.ndarray | None:
        x = self.shingles(normalised)
        if not x.size:
            return None
        sig = np.full(self.a.shape[1], np.iinfo(np.uint64).max, dtype=np.uint64)
        v, hi = self._v, self._hi
        for start in range(0, len(x), _ROWS):  # 128 x 112 values stay in cache: 5x faster than all at once
            rows = min(_ROWS, len(x) - start)
            vv, hh = v[:rows], hi[:rows]
            np.multiply(x[start: start + rows, None], self.a, out=vv)  # wraps at 2^64, as datatrove's does
            vv += self.b
            # vv mod (2^61 - 1) without a division: 2^61 = 1 (mod p), so vv = (vv >> 61) + (vv & p)
            # (mod p), a sum below p + 8. A sum >= p stands for a value below 8, the column's
            # minimum then: such columns (about one in 2^58) are corrected before taking it.
            np.right_shift(vv, _SIXTY_ONE, out=hh)
            vv &= _PRIME
            vv += hh
            m = vv.min(axis=0)
            if (m >= _PRIME).any() or (vv.max(axis=0) >= _PRIME).any():
                np.subtract(vv, _PRIME, out=vv, where=vv >= _PRIME)
                m = vv.min(axis=0)
            np.minimum(sig, m, out=sig)
        return sig.reshape(self.cfg.num_buckets, self.cfg.hashes_per_bucket)

    def keys(self, sig: np.ndarray) -> np.ndarray:
        h = np.zeros(sig.shape[:-1], dtype=np.uint64)
        for j in range(sig.shape[-1]):
            h = _mix(h ^ sig[..., j])
        return h

    def bucket_keys(self, text: str) -> list[int]:
        sig = self.signature(words_text(normalise(text)))
        return [] if sig is None else [int(k) for k in self.keys(sig)]


# --- work directory, completion records ---------------------------------------------------------

def _save(path: Path, arr: np.ndarray) -> None:
    """Write an array under its final name only once it is complete (a crash leaves a tmp file)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        np.save(f, arr, allow_pickle=False)
    os.replace(tmp, path)


def _bucket_names(cfg: DedupConfig) -> list[str]:
    return ([_EXACT] if cfg.exact else []) + ([f"b{b:02d}" for b in range(cfg.num_buckets)] if cfg.minhash else [])


def _bucket_number(name: str) -> int:
    return -1 if name == _EXACT else int(name[1:])


def plan_tasks(kept_parquet: Path, cfg: DedupConfig) -> list[tuple[int, int, int, int]]:
    """(first row group, end row group, first row, end row) of each task: contiguous slices."""
    return row_group_slices(kept_parquet, cfg.tasks, cfg.workers, cfg.task_rows)


# --- stage 1: signatures ------------------------------------------------------------------------

def _batches(pf: pq.ParquetFile, g0: int, g1: int, rows: int, columns=None) -> Iterator[pa.RecordBatch]:
    """A slice's rows, one row group at a time: given them all, pyarrow may read ahead across
    them, and memory would grow with the slice."""
    for g in range(g0, g1):
        yield from pf.iter_batches(batch_size=rows, row_groups=[g], columns=columns)


@recorded(lambda job: f"sig/{job['task']:05d}.done.json")
def _signature_task(job: dict) -> dict:
    work, i = Path(job["work"]), job["task"]
    cfg = DedupConfig(**job["cfg"])
    g0, g1, row, _ = job["slice"]
    out = work / "sig" / f"{i:05d}"
    shutil.rmtree(out, ignore_errors=True)  # a crashed attempt's runs
    out.mkdir(parents=True)
    hasher = MinHasher(cfg)
    names = _bucket_names(cfg)
    pending: dict[str, list[np.ndarray]] = {b: [] for b in names}
    held, runs, docs = 0, 0, 0

    def flush() -> None:
        nonlocal held, runs
        for b in names:
            arr = np.concatenate(pending[b]) if pending[b] else np.empty(0, _RUN)
            arr.sort(order=("k", "i"))
            _save(out / f"r{runs:04d}_{b}.npy", arr)
            pending[b] = []
        held, runs = 0, runs + 1

    pf = pq.ParquetFile(job["kept"])
    for batch in _batches(pf, g0, g1, cfg.batch_rows, columns=["text"]):
        texts = batch.column(0).to_pylist()
        idx = np.arange(row, row + len(texts), dtype=np.int64)
        norm = [normalise(t or "") for t in texts]
        if cfg.exact:
            rec = np.empty(len(texts), _RUN)
            rec["k"] = np.fromiter((xxhash.xxh64_intdigest(t.encode()) for t in norm), np.uint64, len(norm))
            rec["i"] = idx
            pending[_EXACT].append(rec)
        if cfg.minhash:
            sigs = [hasher.signature(words_text(t)) for t in norm]
            have = [j for j, s in enumerate(sigs) if s is not None]
            if have:
                keys = hasher.keys(np.stack([sigs[j] for j in have]))  # (docs, buckets)
                for b in range(cfg.num_buckets):
                    rec = np.empty(len(have), _RUN)
                    rec["k"], rec["i"] = keys[:, b], idx[have]
                    pending[f"b{b:02d}"].append(rec)
        row += len(texts)
        docs += len(texts)
        held += len(texts)
        if held >= cfg.run_rows:
            flush()
    if held or not runs:
        flush()
    return {"task": i, "docs": docs, "runs": runs}


# --- stage 2: per-bucket matching ---------------------------------------------------------------

def _read_chunks(path: Path, dtype, rows: int, npy: bool = False) -> Iterator[np.ndarray]:
    """A file of fixed-size records, `rows` at a time, read (not memory-mapped: the pages of a
    mapping a merge has walked through would stay in its resident memory)."""
    with open(path, "rb") as f:
        if npy:
            fmt = np.lib.format
            header = fmt.read_array_header_1_0 if fmt.read_magic(f) == (1, 0) else fmt.read_array_header_2_0
            header(f)
        while len(part := np.fromfile(f, dtype=dtype, count=rows)):
            yield part


def _npy_chunks(path: Path, rows: int, base: int) -> Iterator[np.ndarray]:
    """One sorted run of this snapshot, with global document indices."""
    for part in _read_chunks(path, _RUN, rows, npy=True):
        part["i"] += base
        yield part


def _index_chunks(path: Path, bucket: int, base: int, rows: int) -> Iterator[np.ndarray]:
    """One bucket of an earlier snapshot's index, as sorted runs with global document indices."""
    pf = pq.ParquetFile(path)
    meta = pf.metadata
    col = pf.schema_arrow.get_field_index("bucket")
    for g in range(meta.num_row_groups):
        stats = meta.row_group(g).column(col).statistics
        if stats is None or stats.min != bucket:
            continue
        t = pf.read_row_group(g, columns=["hash", "doc"])
        for start in range(0, t.num_rows, rows):
            part = t.slice(start, rows)
            rec = np.empty(part.num_rows, _RUN)
            rec["k"] = part["hash"].to_numpy()
            rec["i"] = part["doc"].to_numpy() + base
            yield rec


def merge_runs(sources: list[Iterator[np.ndarray]]) -> Iterator[np.ndarray]:
    """k-way merge of sorted runs, a block at a time: each block holds every remaining entry with
    a key up to the smallest last key among the buffers of runs that have more to give, sorted by
    (key, index). Memory: one chunk per run."""
    bufs: list[np.ndarray | None] = [next(s, None) for s in sources]
    more = [b is not None for b in bufs]
    while True:
        for j, s in enumerate(sources):  # refill emptied buffers of runs that have more
            while more[j] and (bufs[j] is None or not len(bufs[j])):
                bufs[j] = next(s, None)
                if bufs[j] is None:
                    more[j] = False
        live = [b for b in bufs if b is not None and len(b)]
        if not live:
            return
        bounds = [bufs[j]["k"][-1] for j in range(len(bufs)) if more[j] and bufs[j] is not None and len(bufs[j])]
        bound = min(bounds) if bounds else None
        parts = []
        for j, b in enumerate(bufs):
            if b is None or not len(b):
                continue
            cut = len(b) if bound is None else int(np.searchsorted(b["k"], bound, side="right"))
            parts.append(b[:cut])
            bufs[j] = b[cut:]
        block = np.concatenate(parts)
        yield block[np.lexsort((block["i"], block["k"]))]


@recorded(lambda job: f"pairs/{job['bucket']}.done.json")
def _match_task(job: dict) -> dict:
    """Pairs (group's first, member) for documents sharing a key in one bucket, and this snapshot's
    distinct keys with their first document (the index it registers)."""
    work, name = Path(job["work"]), job["bucket"]
    base, chunk = job["base"], job["chunk"]
    sources = [_npy_chunks(work / "sig" / f"{t:05d}" / f"r{r:04d}_{name}.npy", chunk, base)
               for t, runs in enumerate(job["runs"]) for r in range(runs)]
    sources += [_index_chunks(Path(p), _bucket_number(name), b, chunk) for p, b in job["earlier"]]
    tmp_pairs = work / "pairs" / f".{name}.pairs.tmp-{os.getpid()}"
    tmp_index = work / "pairs" / f".{name}.index.tmp-{os.getpid()}"
    n_pairs = n_index = 0
    carry_key, carry_first, carry_cur = None, 0, False
    with open(tmp_pairs, "wb") as fp, open(tmp_index, "wb") as fi:
        for block in merge_runs(sources):
            k, i = block["k"], block["i"]
            same = np.empty(len(k), bool)  # same key as the entry before it (in this merge order)
            same[0] = carry_key is not None and k[0] == carry_key
            same[1:] = k[1:] == k[:-1]
            gid = np.cumsum(~same) - 1 + (1 if same[0] else 0)
            firsts = np.concatenate([[carry_first] if same[0] else [], i[~same]]).astype(np.int64)
            first = firsts[gid]
            # A group's smallest index reaches the merge in the group's first block (every run's
            # buffer then reaches that key), so `first` is the group's smallest index whatever the
            # runs: the pairs, and the clusters, do not depend on how the input was cut.
            member = same & (i >= base)  # pairs between two earlier snapshots' documents are dropped
            pairs = np.stack([first[member], i[member]], axis=1)
            fp.write(pairs.astype("<i8").tobytes())
            n_pairs += len(pairs)
            cur = i >= base
            cur_before = np.concatenate([[carry_cur], cur[:-1]])
            new = cur & ~(same & cur_before)
            entries = np.empty(int(new.sum()), _RUN)
            entries["k"], entries["i"] = k[new], i[new] - base
            fi.write(entries.tobytes())
            n_index += len(entries)
            carry_key, carry_first, carry_cur = k[-1], int(first[-1]), bool(cur[-1])
    os.replace(tmp_pairs, work / "pairs" / f"{name}.pairs")
    os.replace(tmp_index, work / "pairs" / f"{name}.index")
    return {"bucket": name, "pairs": n_pairs, "index_entries": n_index}


# --- stage 3: clusters --------------------------------------------------------------------------

class UnionFind:
    """Disjoint sets of document indices whose root is the smallest member. Holds only documents
    that appear in a pair; a find compresses the path it walked."""

    def __init__(self):
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        parent = self.parent
        root = x
        while (p := parent.get(root, root)) != root:
            root = p
        while x != root:
            x, parent[x] = parent.get(x, x), root
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            lo, hi = (ra, rb) if ra < rb else (rb, ra)
            self.parent[hi] = lo
            self.parent.setdefault(lo, lo)


def _pair_chunks(path: Path, rows: int) -> Iterator[np.ndarray]:
    for part in _read_chunks(path, "<i8", 2 * rows):
        yield np.unique(part.reshape(-1, 2), axis=0)


def _cluster(work: Path, cfg: DedupConfig, base: int, chunk: int) -> dict:
    """The removal file: (row, kind, root) of every removed document, sorted by row."""
    done = work / "clusters.done.json"
    if (rec := read_record(done)) is not None:
        return rec
    removed: dict[int, tuple[int, int]] = {}
    if cfg.exact:  # exact pairs are stars around the group's first: no union needed
        for pairs in _pair_chunks(work / "pairs" / f"{_EXACT}.pairs", chunk):
            for first, other in pairs.tolist():
                removed[other - base] = (1, first)
    if cfg.minhash:
        uf = UnionFind()
        for b in range(cfg.num_buckets):
            for pairs in _pair_chunks(work / "pairs" / f"b{b:02d}.pairs", chunk):
                for a, c in pairs.tolist():
                    uf.union(a, c)
        for node in list(uf.parent):
            if node < base:
                continue
            root = uf.find(node)
            if (node - base) in removed:
                # An exact copy names the kept one of its cluster: its twin may itself be a near
                # duplicate of an earlier document (the twin's keys are its own, so same cluster).
                kind, twin = removed[node - base]
                removed[node - base] = (kind, min(twin, root))
            elif root != node:
                removed[node - base] = (2, root)
    rows = np.array(sorted(removed), dtype=np.int64)
    out = np.empty(len(rows), [("row", "<i8"), ("kind", "<i1"), ("root", "<i8")])
    out["row"] = rows
    out["kind"] = [removed[r][0] for r in rows.tolist()]
    out["root"] = [removed[r][1] for r in rows.tolist()]
    _save(work / "remove.npy", out)
    rec = {"exact": int((out["kind"] == 1).sum()), "near": int((out["kind"] == 2).sum())}
    atomic.write_json_atomic(done, rec)
    return rec


# --- stage 4: per-task removal ------------------------------------------------------------------

def lookup_ids(path: Path, rows: list[int], column: str = "id") -> dict[int, str]:
    """The `column` value of the given rows of a parquet file, reading only the row groups that hold
    them (one at a time)."""
    rows = sorted(set(rows))
    if not rows:
        return {}
    pf = pq.ParquetFile(path)
    meta = pf.metadata
    starts = np.concatenate([[0], np.cumsum([meta.row_group(g).num_rows for g in range(meta.num_row_groups)])])
    group_of = np.searchsorted(starts, rows, side="right") - 1
    out: dict[int, str] = {}
    for g in np.unique(group_of).tolist():
        values = pf.read_row_group(g, columns=[column]).column(0)
        for r in np.asarray(rows)[group_of == g].tolist():
            out[r] = values[r - int(starts[g])].as_py()
    return out


@recorded(lambda job: f"parts/{job['task']:05d}.done.json")
def _filter_task(job: dict) -> dict:
    work, i = Path(job["work"]), job["task"]
    cfg = DedupConfig(**job["cfg"])
    g0, g1, r0, r1 = job["slice"]
    remove = np.load(work / "remove.npy", mmap_mode="r")
    lo, hi = np.searchsorted(remove["row"], [r0, r1])
    mine = np.array(remove[lo:hi])
    # The kept member each removed document names: in this snapshot or in an earlier one.
    refs: dict[int, str] = {}
    snaps = mine["root"] >> _SNAP_SHIFT
    for pos in np.unique(snaps).tolist():
        roots = (mine["root"][snaps == pos] & ((1 << _SNAP_SHIFT) - 1)).tolist()
        key = job["snapshots"][pos]
        path = Path(job["kept"]) if pos == job["position"] else Path(job["earlier_ids"][pos])
        for r, doc_id in lookup_ids(path, roots).items():
            refs[(pos << _SNAP_SHIFT) + r] = f"{key}:{doc_id}"
    parts = work / "parts"
    tmp_kept, tmp_dups = parts / f".{i:05d}.kept.tmp-{os.getpid()}", parts / f".{i:05d}.dups.tmp-{os.getpid()}"
    counts = {"in": 0, "kept": 0, "exact": 0, "near": 0}
    kept_w = pq.ParquetWriter(tmp_kept, KEPT_SCHEMA, **_PARQUET_OPTS)
    dup_w = pq.ParquetWriter(tmp_dups, DUP_SCHEMA, **_PARQUET_OPTS)
    try:
        pf = pq.ParquetFile(job["kept"])
        row, at = r0, 0
        for batch in _batches(pf, g0, g1, cfg.batch_rows):
            table = pa.Table.from_batches([batch]).cast(KEPT_SCHEMA)
            n = table.num_rows
            end = at + int(np.searchsorted(mine["row"][at:], row + n))
            here = mine[at:end]
            keep = np.ones(n, bool)
            keep[here["row"] - row] = False
            kept = table.filter(pa.array(keep))
            kept_w.write_table(kept)
            if len(here):
                local = (here["row"] - row).tolist()
                dup_w.write_table(pa.table({
                    "id": table["id"].take(local), "source_file": table["source_file"].take(local),
                    "source_row": table["source_row"].take(local),
                    "kind": pa.array([_KIND[k] for k in here["kind"].tolist()], pa.string()),
                    "duplicate_of": pa.array([refs[r] for r in here["root"].tolist()], pa.string()),
                }, schema=DUP_SCHEMA))
            counts["in"] += n
            counts["kept"] += kept.num_rows
            counts["exact"] += int((here["kind"] == 1).sum())
            counts["near"] += int((here["kind"] == 2).sum())
            row, at = row + n, end
    finally:
        kept_w.close()
        dup_w.close()
    if counts["in"] != r1 - r0 or counts["in"] != counts["kept"] + counts["exact"] + counts["near"]:
        raise AssertionError(f"dedup task {i} lost documents: rows {r0}..{r1}, {counts}")
    os.replace(tmp_kept, parts / f"{i:05d}.kept.parquet")
    os.replace(tmp_dups, parts / f"{i:05d}.dups.parquet")
    return {"task": i, **counts}


class _FixedRowGroups:
    """Writes tables as row groups of exactly `rows` rows (the last one shorter), so the file's
    bytes do not depend on how the rows arrived."""

    def __init__(self, writer: pq.ParquetWriter, rows: int = OUTPUT_ROW_GROUP):
        self.writer, self.rows, self.buf, self.n = writer, rows, [], 0

    def add(self, table: pa.Table) -> None:
        self.buf.append(table)
        self.n += table.num_rows
        while self.n >= self.rows:
            whole = pa.concat_tables(self.buf)
            self.writer.write_table(whole.slice(0, self.rows).combine_chunks(), row_group_size=self.rows)
            rest = whole.slice(self.rows)
            self.buf, self.n = [rest], rest.num_rows

    def close(self) -> None:
        if self.n:
            self.writer.write_table(pa.concat_tables(self.buf).combine_chunks(), row_group_size=self.rows)
        self.writer.close()


# --- the index shared by snapshots --------------------------------------------------------------

def _order_file(index_dir: Path) -> Path:
    return index_dir / "order.json"


def registered_snapshots(index_dir: str | os.PathLike) -> list[str]:
    """The snapshots whose index is complete, in the order they were first deduplicated."""
    order_file = _order_file(Path(index_dir))
    return json.loads(order_file.read_text())["order"] if order_file.exists() else []


def _register(index_dir: Path, key: str) -> None:
    """Append `key` to order.json once its index files are complete (called under the lock)."""
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


def _earlier_files(index_dir: Path, earlier: list[str]) -> list[tuple[Path, Path]]:
    out = []
    for key in earlier:
        paths = (index_dir / f"{key}.parquet", index_dir / f"{key}.ids.parquet")
        for path in paths:
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path}: dedup index of earlier snapshot {key} is missing; rerun dedup for {key} "
                    f"or remove it from {_order_file(index_dir)}")
        out.append(paths)
    return out


def _fsynced_replace(tmp: Path, final: Path) -> None:
    with open(tmp, "rb") as fh:  # on disk before order.json names it
        os.fsync(fh.fileno())
    os.replace(tmp, final)


def _write_index(work: Path, kept_parquet: Path, index_dir: Path, key: str, cfg: DedupConfig) -> Path:
    """This snapshot's signatures (distinct keys per bucket, sorted) and ids, streamed from the
    matching stage's files. Called under the index lock, which every writer there holds, so the
    staging files found (of index files or order.json) were left by a killed process."""
    index_file, ids_file = index_dir / f"{key}.parquet", index_dir / f"{key}.ids.parquet"
    for stale in index_dir.glob(".*.tmp-*"):
        stale.unlink(missing_ok=True)
    tmp_index = index_dir / f".{key}.parquet.tmp-{os.getpid()}"
    tmp_ids = index_dir / f".{key}.ids.parquet.tmp-{os.getpid()}"
    try:
        with pq.ParquetWriter(tmp_ids, _IDS_SCHEMA, **_PARQUET_OPTS) as w:
            pf = pq.ParquetFile(kept_parquet)
            for batch in _batches(pf, 0, pf.metadata.num_row_groups, 65536, columns=["id"]):
                w.write_table(pa.table({"id": batch.column(0).cast(pa.string())}, schema=_IDS_SCHEMA))
        with pq.ParquetWriter(tmp_index, _INDEX_SCHEMA, **_PARQUET_OPTS) as w:
            for name in _bucket_names(cfg):
                path = work / "pairs" / f"{name}.index"
                for part in _read_chunks(path, _RUN, 1 << 20):
                    w.write_table(pa.table({
                        "bucket": pa.array(np.full(len(part), _bucket_number(name), np.int16)),
                        "hash": pa.array(part["k"]), "doc": pa.array(part["i"])}, schema=_INDEX_SCHEMA))
        _fsynced_replace(tmp_ids, ids_file)
        _fsynced_replace(tmp_index, index_file)
    finally:
        tmp_index.unlink(missing_ok=True)
        tmp_ids.unlink(missing_ok=True)
    return index_file


# --- the stage ----------------------------------------------------------------------------------

def dedup_snapshot(kept_parquet: str | os.PathLike, out_dir: str | os.PathLike,
                   index_dir: str | os.PathLike | None = None, cfg: DedupConfig = DedupConfig(),
                   snapshot_key: str | None = None, progress=None) -> DedupResult:
    """Deduplicate `kept_parquet` (the filter stage's output) into `out_dir/{kept,duplicates}.parquet`.
    With `index_dir`, this snapshot's signatures are registered there (and, with
    `cfg.cross_snapshot`, it is compared with the snapshots registered before it)."""
    kept_parquet, out_dir = Path(kept_parquet), Path(out_dir)
    key = snapshot_key or kept_parquet.parent.parent.name or "snapshot"
    if cfg.cross_snapshot and index_dir is None:
        raise ValueError("cross-snapshot dedup needs an index directory (--index)")
    index_dir = Path(index_dir) if index_dir is not None else None
    if index_dir is not None:
        index_dir.mkdir(parents=True, exist_ok=True)
    # Cross-snapshot runs hold the index from reading order.json to registering; a per-snapshot
    # run reads nothing there and takes its turn only to register.
    with index_lock(index_dir) if cfg.cross_snapshot else contextlib.nullcontext():
        return _dedup(kept_parquet, out_dir, index_dir, cfg, key, progress)


def _dedup(kept_parquet: Path, out_dir: Path, index_dir: Path | None, cfg: DedupConfig, key: str,
           progress) -> DedupResult:
    order = registered_snapshots(index_dir) if cfg.cross_snapshot else []
    position = order.index(key) if key in order else len(order)
    earlier = order[:position]
    earlier_files = _earlier_files(index_dir, earlier) if cfg.cross_snapshot else []
    fp = atomic.fingerprint(stage=STAGE_VERSION, key=key, input=atomic.sha256_file(kept_parquet),
                            cfg=cfg.output_fields(),
                            earlier=[(k, atomic.sha256_file(p)) for k, (p, _) in zip(earlier, earlier_files)])
    index_file = index_dir / f"{key}.parquet" if index_dir is not None else None
    done = atomic.completed(out_dir, fp)
    if done is not None and (index_file is None or index_file.exists()):
        return DedupResult(**done["result"])

    plan = plan_tasks(kept_parquet, cfg)
    base = position << _SNAP_SHIFT
    run_id = atomic.fingerprint(fp=fp, plan=plan, run_rows=cfg.run_rows, batch_rows=cfg.batch_rows)[:16]
    with atomic.staged_dir(out_dir) as stage, atomic.work_dir(out_dir, run_id) as work:
        for sub in ("sig", "pairs", "parts"):
            (work / sub).mkdir(exist_ok=True)
        # Absolute paths: a Ray worker need not share this process's working directory.
        common = {"work": str(work.absolute()), "kept": str(kept_parquet.absolute()), "cfg": asdict(cfg)}
        workers = min(cfg.workers, len(plan))

        with open_executor(cfg.executor, workers, cfg.ray_address) as ex:
            sig_recs = []
            for rec in ex.map(_signature_task, [{**common, "task": i, "slice": s} for i, s in enumerate(plan)]):
                sig_recs.append(rec)
                if progress is not None:
                    progress.update(rec["docs"])
            names = _bucket_names(cfg)
            chunk = max(1024, cfg.merge_rows // max(1, sum(r["runs"] for r in sig_recs) + len(earlier)))
            jobs = [{**common, "bucket": b, "base": base, "chunk": chunk, "runs": [r["runs"] for r in sig_recs],
                     "earlier": [(str(p.absolute()), j << _SNAP_SHIFT) for j, (p, _) in enumerate(earlier_files)]}
                    for b in names]
            list(ex.map(_match_task, jobs))
            _cluster(work, cfg, base, chunk)
            fjobs = [{**common, "task": i, "slice": s, "position": position, "snapshots": [*earlier, key],
                      "earlier_ids": [str(ids.absolute()) for _, ids in earlier_files]} for i, s in enumerate(plan)]
            parts = list(ex.map(_filter_task, fjobs))

        kept_w = _FixedRowGroups(atomic.parquet_writer(stage / "kept.parquet", KEPT_SCHEMA, **_PARQUET_OPTS))
        dup_w = _FixedRowGroups(atomic.parquet_writer(stage / "duplicates.parquet", DUP_SCHEMA, **_PARQUET_OPTS))
        for i in range(len(plan)):  # task order: the output does not depend on who finished first
            for name, w in (("kept", kept_w), ("dups", dup_w)):
                part = pq.ParquetFile(work / "parts" / f"{i:05d}.{name}.parquet")
                for batch in _batches(part, 0, part.metadata.num_row_groups, OUTPUT_ROW_GROUP):
                    w.add(pa.Table.from_batches([batch]))
        kept_w.close()
        dup_w.close()
        total = {k: sum(p[k] for p in parts) for k in ("in", "kept", "exact", "near")}
        docs_in = pq.ParquetFile(kept_parquet).metadata.num_rows
        result = DedupResult(
            snapshot=key, docs_in=total["in"], kept=total["kept"], exact_duplicates=total["exact"],
            near_duplicates=total["near"], kept_path=str(out_dir / "kept.parquet"),
            duplicates_path=str(out_dir / "duplicates.parquet"),
            kept_sha256=atomic.sha256_file(stage / "kept.parquet"),
            index_file=str(index_file) if index_file is not None else "", fingerprint=fp,
            scope="cross-snapshot" if cfg.cross_snapshot else "snapshot", tasks=len(plan),
        )
        if not result.conserved or docs_in != result.docs_in:
            raise AssertionError(f"dedup stage lost documents ({docs_in} rows in): {result.to_dict()}")
        if index_dir is not None:
            # The index is written before the outputs become visible: a crash in between leaves
            # the index, and the rerun (which skips this snapshot's own file) recomputes the same.
            with contextlib.nullcontext() if cfg.cross_snapshot else index_lock(index_dir):
                _write_index(work, kept_parquet, index_dir, key, cfg)
                _register(index_dir, key)
        atomic.write_json_atomic(stage / atomic.SUCCESS, {"fingerprint": fp, "result": result.to_dict()})
    return result

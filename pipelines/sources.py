"""Where documents come from: a local directory of files in FineWeb's schema, or FineWeb on the
Hugging Face hub. Both give a `Snapshot` (a stable key, later used as a Dagster partition, plus
the files) and the same bounded-memory document iterator.

    python -m pipelines.sources ../shared/data/docs-sample      # lists the local snapshots found

A local snapshot's key is its directory name plus 8 hex digits of a hash over its files' names
and bytes, so a changed file gives a new key. A hub snapshot's key is the config or dump plus the
dataset revision (a commit sha), resolved once and recorded.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

HUB_REPO = "HuggingFaceFW/fineweb"
SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz")

# FineWeb's columns, as its parquet files have them.
FINEWEB_SCHEMA = pa.schema(
    [
        ("text", pa.string()),
        ("id", pa.string()),
        ("dump", pa.string()),
        ("url", pa.string()),
        ("date", pa.string()),
        ("file_path", pa.string()),
        ("language", pa.string()),
        ("language_score", pa.float64()),
        ("token_count", pa.int64()),
    ]
)
# The pipeline carries FineWeb's columns plus where each document came from.
SCHEMA = pa.schema(
    [
        *FINEWEB_SCHEMA,
        ("source_file", pa.string()),
        ("source_row", pa.int64()),
        # Why a row could not be read as a document (e.g. invalid UTF-8); null for good rows.
        ("input_error", pa.string()),
    ]
)
_FINEWEB_COLUMNS = FINEWEB_SCHEMA.names


class SourceError(RuntimeError):
    """A source file (or the hub) that cannot be read; the message names the file and row."""


class HubUnreachableError(SourceError):
    pass


@dataclass(frozen=True)
class Snapshot:
    """A set of input files processed together; `key` is stable and safe as a path/partition."""

    key: str
    kind: str  # "local" | "hub"
    files: list[Path] = field(default_factory=list)
    revision: str | None = None
    root: Path | None = None
    limit_docs: int | None = None  # read at most this many documents (part of the key when set)
    # Entries named like data files that are not readable files (a symlink loop, a dangling
    # link, a FIFO, a directory): listed as skipped files, never silently dropped.
    skipped: tuple[dict, ...] = ()

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._@-]*", self.key):
            raise ValueError(f"snapshot key {self.key!r} must be letters, digits and ._@-")
        if self.kind not in ("local", "hub"):
            raise ValueError(f"snapshot kind must be 'local' or 'hub', got {self.kind!r}")

    def to_dict(self) -> dict:
        return {
            "key": self.key,
            "kind": self.kind,
            "files": [str(f) for f in self.files],
            "revision": self.revision,
            "root": str(self.root) if self.root else None,
            "limit_docs": self.limit_docs,
            "skipped": [dict(x) for x in self.skipped],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Snapshot":
        return cls(key=d["key"], kind=d["kind"], files=[Path(f) for f in d.get("files", [])],
                   revision=d.get("revision"), root=Path(d["root"]) if d.get("root") else None,
                   limit_docs=d.get("limit_docs"), skipped=tuple(d.get("skipped", ())))


def _data_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.name.endswith(SUFFIXES))


def _unreadable_entries(directory: Path) -> list[dict]:
    """Entries with a data file's name that are not regular files, and why."""
    out = []
    for p in sorted(directory.iterdir()):
        if not p.name.endswith(SUFFIXES) or p.is_file():
            continue
        try:
            p.stat()
        except OSError as exc:  # ELOOP for a link to itself, ENOENT for a dangling one
            why = "a symbolic link loop" if exc.errno == errno.ELOOP else f"a link to a missing file ({exc.strerror})"
        else:
            why = "a directory" if p.is_dir() else "not a regular file"
        out.append(SkippedFile(str(p), f"{p}: {why}, not read").to_dict())
    return out


def _content_hash(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "snapshot"


def local_snapshot(directory: str | os.PathLike) -> Snapshot:
    """A directory of *.parquet / *.jsonl / *.jsonl.gz files in FineWeb's schema."""
    directory = Path(directory)
    if not directory.is_dir():
        raise SourceError(f"{directory}: not a directory")
    files = _data_files(directory)
    if not files:
        raise SourceError(f"{directory}: no {', '.join(SUFFIXES)} files")
    key = f"{_safe_name(directory.name)}-{_content_hash(files)[:8]}"
    return Snapshot(key=key, kind="local", files=files, revision=None, root=directory,
                    skipped=tuple(_unreadable_entries(directory)))


def discover_local_snapshots(inbox_dir: str | os.PathLike) -> list[Snapshot]:
    """Every subdirectory of `inbox_dir` holding data files is one snapshot (sorted by name)."""
    inbox = Path(inbox_dir)
    if not inbox.is_dir():
        raise SourceError(f"{inbox}: not a directory")
    return [local_snapshot(d) for d in sorted(inbox.iterdir()) if d.is_dir() and _data_files(d)]


# ---------------------------------------------------------------------------------------------
# The hub
#
# huggingface_hub does the HTTP: HEAD then GET on resolve/<sha>/<file>, and a connection cut
# mid-file is resumed there with a Range request. It checks only the size of what it got, and
# retries a 5xx on the HEAD but not on the GET nor on the dataset info; so here we retry what is
# transient, and check each new download's sha256 against the one the hub announces.

# Seconds to wait before each retry of a hub call that failed in a transient way (a 5xx, 408,
# 429, a dropped or refused connection); after the last, the error is the user's.
HUB_RETRY_WAITS_S = (1.0, 3.0, 9.0)


class HubIntegrityError(SourceError):
    """A downloaded file whose bytes are not the ones the hub announced."""


def _hub_endpoint() -> str | None:
    # Read at call time: huggingface_hub reads HF_ENDPOINT once, when it is imported, and Dagster
    # imports it long before a run sets its environment.
    return os.environ.get("HF_ENDPOINT") or None


def _hub_cache_dir(cache_dir: str | os.PathLike | None) -> str | None:
    if cache_dir is not None:
        return str(cache_dir)
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    return str(Path(os.environ["HF_HOME"]) / "hub") if os.environ.get("HF_HOME") else None


def _one_line(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {' '.join(str(exc).split())}"


def _transient(exc: BaseException) -> bool:
    """Worth another try: the hub or the network failing, not a missing repo, revision or file."""
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(exc, SourceError):
        return False
    if isinstance(exc, HfHubHTTPError):
        code = getattr(exc.response, "status_code", None)
        return code is None or code >= 500 or code in (408, 429)
    return not isinstance(exc, ValueError)


def _hub_call(what: str, fn):
    """fn(), tried again after each wait of HUB_RETRY_WAITS_S while it fails transiently."""
    import logging
    import time

    for wait in (*HUB_RETRY_WAITS_S, None):
        try:
            return fn()
        except Exception as exc:
            if wait is None or not _transient(exc):
                raise
            logging.getLogger(__name__).warning("hub: %s failed (%s); retrying in %gs", what, _one_line(exc), wait)
            time.sleep(wait)


def _file_digest(path: Path, algorithm: str, prefix: bytes = b"") -> str:
    h = hashlib.new(algorithm, prefix)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verify_download(path: Path, sibling, where: str) -> None:
    """The file's sha256 (an LFS file, as FineWeb's parquet are) or git blob sha1 is the one the
    hub lists; if not, the cached copy is removed (so a rerun downloads it again) and the error
    names the file."""
    if sibling.lfs is not None:
        expected, got, kind = sibling.lfs.sha256, _file_digest(path, "sha256"), "sha256"
    elif sibling.blob_id:
        size = path.stat().st_size
        expected, got, kind = sibling.blob_id, _file_digest(path, "sha1", b"blob %d\0" % size), "git blob sha1"
    else:
        return
    if got == expected:
        return
    blob = path.resolve()
    path.unlink(missing_ok=True)
    blob.unlink(missing_ok=True)
    raise HubIntegrityError(
        f"{where}: the downloaded bytes do not match the hub's {kind} ({got[:16]}... instead of "
        f"{expected[:16]}...); the copy was removed from the cache, run again to download it anew"
    )


def hub_revision(repo: str = HUB_REPO, revision: str | None = None) -> str:
    """The commit sha `revision` (default: the main branch) of a dataset repo points at now."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=_hub_endpoint())
    return _hub_call(f"dataset info of {repo}", lambda: api.dataset_info(repo, revision=revision)).sha


def _hub_list_and_download(repo: str, pattern: str, revision: str | None, cache_dir: str | None, max_files: int | None):
    """The only function that downloads: resolve the revision to a commit sha, list the matching
    files at that sha, download each into the hub cache (pinned to the sha) and check its bytes.
    Returns (sha, [paths])."""
    import fnmatch

    from huggingface_hub import HfApi, hf_hub_download, try_to_load_from_cache

    endpoint, cache_dir = _hub_endpoint(), _hub_cache_dir(cache_dir)
    api = HfApi(endpoint=endpoint)
    info = _hub_call(f"dataset info of {repo}",
                     lambda: api.dataset_info(repo, revision=revision, files_metadata=True))
    siblings = sorted((s for s in info.siblings if fnmatch.fnmatch(s.rfilename, pattern)), key=lambda s: s.rfilename)
    if max_files is not None:
        siblings = siblings[:max_files]
    paths = []
    for s in siblings:
        cached = try_to_load_from_cache(repo, s.rfilename, cache_dir=cache_dir, revision=info.sha, repo_type="dataset")
        path = Path(_hub_call(f"download of {s.rfilename}", lambda s=s: hf_hub_download(
            repo, s.rfilename, repo_type="dataset", revision=info.sha, cache_dir=cache_dir, endpoint=endpoint)))
        if not isinstance(cached, str):  # verified when it was downloaded
            _verify_download(path, s, f"{repo}@{info.sha[:12]}/{s.rfilename}")
        paths.append(path)
    return info.sha, paths


def hub_pattern(config_or_dump: str) -> str:
    """FineWeb's files of a config (`sample-10BT`) or a dump (`CC-MAIN-2024-10`)."""
    if config_or_dump.startswith("CC-MAIN-"):
        return f"data/{config_or_dump}/*.parquet"
    return f"sample/{config_or_dump.removeprefix('sample-')}/*.parquet"


def hub_snapshot(
    config_or_dump: str,
    revision: str | None = None,
    limit: int | None = None,
    max_files: int | None = 1,
    cache_dir: str | None = None,
    repo: str = HUB_REPO,
) -> Snapshot:
    """FineWeb from the hub: a config (`sample-10BT`) or a dump (`CC-MAIN-2024-10`), the first
    `max_files` parquet files (None: all), at most `limit` documents. Files are downloaded
    into the hub cache, pinned to the resolved revision (a commit sha), which is part of the key;
    a transient failure is retried, a file whose bytes do not match is refused."""
    pattern = hub_pattern(config_or_dump)
    try:
        sha, files = _hub_list_and_download(repo, pattern, revision, cache_dir, max_files)
    except SourceError:
        raise
    except Exception as exc:  # the hub client raises many types for "no network"
        raise HubUnreachableError(
            f"cannot read {repo} ({config_or_dump}) from the Hugging Face hub at "
            f"{_hub_endpoint() or 'https://huggingface.co'}: {_one_line(exc)}. "
            "Without network access, put the parquet/jsonl files in a directory and use it as a "
            "local snapshot: `hgpt data run --input DIR` (or `local_snapshot(DIR)`)."
        ) from exc
    if not files:
        raise SourceError(f"{repo}@{sha}: no files match {pattern}")
    key = f"{_safe_name(config_or_dump)}@{sha[:12]}" + (f"-n{limit}" if limit is not None else "")
    return Snapshot(key=key, kind="hub", files=files, revision=sha, limit_docs=limit)


# ---------------------------------------------------------------------------------------------
# Reading documents


@dataclass(frozen=True)
class ReadConfig:
    """How documents are read: batches of at most `batch_rows` documents and `batch_bytes`
    characters of text bound memory; `on_error` decides what an unreadable file does ("raise"
    stops, "skip" records it and goes on with the other files) and what a row with a value that
    does not fit the schema does ("raise" stops naming file and row, "skip" rejects the row as
    `input/invalid_field` or `input/invalid_unicode`). A line that is not UTF-8 or not JSON is a
    rejected document either way (`input/invalid_utf8`, `input/invalid_json`)."""

    batch_rows: int = 256
    batch_bytes: int = 32 << 20
    on_error: str = "raise"
    limit_docs: int | None = None

    def __post_init__(self) -> None:
        if self.batch_rows < 1 or self.batch_bytes < 1:
            raise ValueError("batch_rows and batch_bytes must be >= 1")
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {self.on_error!r}")
        if self.limit_docs is not None and self.limit_docs < 0:
            raise ValueError("limit_docs must be >= 0")


@dataclass
class SkippedFile:
    file: str
    error: str

    def to_dict(self) -> dict:
        return {"file": self.file, "error": self.error}


def _row(values: dict, source_file: str, source_row: int) -> dict:
    doc = {name: values.get(name) for name in _FINEWEB_COLUMNS}
    if doc["id"] is None:
        doc["id"] = f"{source_file}#{source_row}"
    doc["source_file"] = source_file
    doc["source_row"] = source_row
    doc["input_error"] = None
    return doc


_STRINGS = frozenset(f.name for f in FINEWEB_SCHEMA if f.type == pa.string())
_INT64 = (-(1 << 63), (1 << 63) - 1)


def _bad_values(doc: dict, check_unicode: bool) -> tuple[str, str] | None:
    """(reason, what) when a value does not fit FineWeb's schema: a number where a string belongs,
    a string where a number belongs, or (from JSON's \\ud800 escapes) a lone surrogate, which no
    UTF-8 file can hold. The bad values are replaced in `doc` (None, or the surrogate escaped) so
    the row can still be written among the rejected; a non-string text is left to the filters,
    which reject it as `not_a_string`."""
    problems: list[tuple[str, str]] = []
    for name in _FINEWEB_COLUMNS:
        value = doc[name]
        if value is None:
            continue
        if name in _STRINGS:
            if not isinstance(value, str):
                if name != "text":
                    problems.append(("invalid_field", f"'{name}' must be a string, got {type(value).__name__} {value!r:.40}"))
                    doc[name] = f"{doc['source_file']}#{doc['source_row']}" if name == "id" else None
            elif check_unicode and not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError as exc:
                    problems.append(("invalid_unicode", f"'{name}' has a lone surrogate at character {exc.start}"))
                    doc[name] = value.encode("utf-8", "backslashreplace").decode("utf-8")
        elif name == "language_score":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                problems.append(("invalid_field", f"'{name}' must be a number, got {type(value).__name__} {value!r:.40}"))
                doc[name] = None
            else:
                doc[name] = float(value)
        elif name == "token_count":
            if isinstance(value, float) and value.is_integer():
                value = doc[name] = int(value)
            if isinstance(value, bool) or not isinstance(value, int) or not _INT64[0] <= value <= _INT64[1]:
                problems.append(("invalid_field", f"'{name}' must be a 64-bit integer, got {type(value).__name__} {value!r:.40}"))
                doc[name] = None
    if not problems:
        return None
    return problems[0][0], "; ".join(what for _, what in problems)


def _check_row(doc: dict, where: str, cfg: "ReadConfig", check_unicode: bool) -> dict:
    """A row with a value that does not fit the schema stops the run (on_error="raise": one error
    naming file and row) or becomes a counted rejection `input/<reason>` (on_error="skip")."""
    bad = _bad_values(doc, check_unicode)
    if bad is not None:
        reason, what = bad
        if cfg.on_error == "raise":
            raise SourceError(f"{where}: {what}")
        doc["input_error"] = f"{reason}: {where}: {what}"
    return doc


def open_parquet(path: Path) -> tuple[pq.ParquetFile, list[str]]:
    """(the file, FineWeb's columns it holds); a SourceError naming the file where it cannot be
    read or has no `text` column."""
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:
        raise SourceError(f"{path}: not a readable parquet file ({exc})") from exc
    columns = [c for c in _FINEWEB_COLUMNS if c in pf.schema_arrow.names]
    if "text" not in columns:
        raise SourceError(f"{path}: no 'text' column (columns: {', '.join(pf.schema_arrow.names)})")
    return pf, columns


def _iter_parquet(path: Path, cfg: ReadConfig) -> Iterator[list[dict]]:
    name = path.name
    pf, columns = open_parquet(path)
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=cfg.batch_rows, columns=columns):
            docs = []
            for values in batch.to_pylist():
                # parquet strings are valid UTF-8 already; a column's type may still be wrong
                docs.append(_check_row(_row(values, name, row), f"{path} row {row}", cfg, check_unicode=False))
                row += 1
            yield docs
    except SourceError:
        raise
    except Exception as exc:
        raise SourceError(f"{path}: unreadable at row {row} ({exc.__class__.__name__}: {exc})") from exc


def _iter_jsonl(path: Path, cfg: ReadConfig) -> Iterator[list[dict]]:
    name = path.name
    opener = gzip.open if path.name.endswith(".gz") else open
    docs: list[dict] = []
    row = -1
    try:
        with opener(path, "rb") as f:
            for row, raw in enumerate(f):
                # A line that is not UTF-8 or not JSON is one bad document, not a bad file.
                try:
                    values = json.loads(raw.decode("utf-8"))
                    if not isinstance(values, dict):
                        raise ValueError("not a JSON object")
                    if row == 0 and "text" not in values:
                        raise SourceError(f"{path}: no 'text' field in row 0 (fields: {', '.join(values)})")
                    doc = _check_row(_row(values, name, row), f"{path}:{row + 1}", cfg, check_unicode=True)
                except UnicodeDecodeError as exc:
                    doc = _row({}, name, row)
                    doc["input_error"] = f"invalid_utf8: {path}:{row + 1}: byte {exc.start}: {exc.reason}"
                except ValueError as exc:
                    doc = _row({}, name, row)
                    doc["input_error"] = f"invalid_json: {path}:{row + 1}: {exc}"
                docs.append(doc)
                if len(docs) >= cfg.batch_rows:
                    yield docs
                    docs = []
    except SourceError:
        raise
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise SourceError(f"{path}: unreadable after row {row} ({exc.__class__.__name__}: {exc})") from exc
    if docs:
        yield docs


def _by_bytes(batches: Iterator[list[dict]], limit: int) -> Iterator[list[dict]]:
    """Cut batches further so that the text of one batch stays under `limit` characters (a
    batch always holds at least one document): a few huge pages cannot blow up memory."""
    for batch in batches:
        out: list[dict] = []
        size = 0
        for doc in batch:
            n = len(doc["text"]) if isinstance(doc.get("text"), str) else 0
            if out and size + n > limit:
                yield out
                out, size = [], 0
            out.append(doc)
            size += n
        if out:
            yield out


def iter_file_batches(path: Path, cfg: ReadConfig = ReadConfig()) -> Iterator[list[dict]]:
    """Documents of one file in batches of dicts (SCHEMA's columns)."""
    path = Path(path)
    if path.name.endswith(".parquet"):
        yield from _by_bytes(_iter_parquet(path, cfg), cfg.batch_bytes)
    elif path.name.endswith((".jsonl", ".jsonl.gz")):
        yield from _by_bytes(_iter_jsonl(path, cfg), cfg.batch_bytes)
    else:
        raise SourceError(f"{path}: unknown file type (expected {', '.join(SUFFIXES)})")


def iter_documents(
    snapshot: Snapshot, cfg: ReadConfig = ReadConfig(), skipped: list[SkippedFile] | None = None
) -> Iterator[list[dict]]:
    """All documents of a snapshot, file by file in name order, in batches of at most
    `cfg.batch_rows` documents. With `on_error="skip"`, a file that fails is appended to
    `skipped` and the other files go on; documents it yielded before failing are kept (they
    were read correctly), so conservation holds over what was read."""
    limits = [x for x in (cfg.limit_docs, snapshot.limit_docs) if x is not None]
    if limits:
        cfg = ReadConfig(cfg.batch_rows, cfg.batch_bytes, cfg.on_error, min(limits))
    seen = 0
    for entry in snapshot.skipped:
        if skipped is not None:
            skipped.append(SkippedFile(**entry))
        print(f"warning: skipping {entry['error']}", file=sys.stderr)
    for path in snapshot.files:
        try:
            for batch in iter_file_batches(path, cfg):
                if cfg.limit_docs is not None:
                    batch = batch[: max(0, cfg.limit_docs - seen)]
                if batch:
                    seen += len(batch)
                    yield batch
                if cfg.limit_docs is not None and seen >= cfg.limit_docs:
                    return
        except SourceError as exc:
            if cfg.on_error == "raise":
                raise
            if skipped is not None:
                skipped.append(SkippedFile(str(path), str(exc)))
            print(f"warning: skipping {exc}", file=sys.stderr)


def main(argv: list[str]) -> int:
    for snap in discover_local_snapshots(argv[0] if argv else "."):
        print(json.dumps(snap.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Token shards in llm.c's `.bin` format, shared by the data pipeline (writer) and training (reader).

Layout (little-endian), the same as llm.c `dev/data/data_common.py` and modded-nanogpt:
    header: 256 x int32 = [MAGIC=20240520, VERSION=1, n_tokens, 0, ...]
    body:   n_tokens x uint16
Writes are atomic: the shard is written under a temporary name in the same directory, fsynced,
then renamed, so a reader never sees a half-written shard under its final name.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
TOKEN_DTYPE = np.dtype("<u2")
MAX_TOKEN = np.iinfo(np.uint16).max  # GPT-2's 50257 tokens fit in uint16


class ShardError(ValueError):
    """A shard file that is not a valid llm.c token shard."""


def make_header(n_tokens: int) -> np.ndarray:
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = MAGIC, VERSION, n_tokens
    return header


def write_shard(path: str | os.PathLike, tokens) -> Path:
    """Write `tokens` (ints < 65536) atomically as one shard; returns the final path."""
    path = Path(path)
    body = np.asarray(tokens)
    if body.size and (body.min() < 0 or body.max() > MAX_TOKEN):
        raise ShardError(f"{path}: token ids must lie in [0, {MAX_TOKEN}]")
    body = body.astype(TOKEN_DTYPE, copy=False)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(make_header(body.size).tobytes())
        f.write(body.tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def file_kind(mode: int) -> str:
    """What a non-regular file is, for error messages (from its st_mode)."""
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"


def _open_regular(path: Path):
    """Open a shard for reading, refusing anything but a regular file. O_NONBLOCK makes the open
    of a FIFO return at once instead of waiting forever for a writer; the type is then checked on
    the open descriptor itself, so the file cannot be swapped between the check and the read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise ShardError(f"{path}: cannot read shard ({exc.strerror})") from exc
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise ShardError(f"{path}: is {file_kind(mode)}, not a regular shard file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _read_header(path: Path, f) -> int:
    try:
        size = os.fstat(f.fileno()).st_size
        raw = f.read(HEADER_BYTES)
    except OSError as exc:
        raise ShardError(f"{path}: cannot read shard ({exc.strerror})") from exc
    if len(raw) < HEADER_BYTES:
        raise ShardError(f"{path}: truncated header ({len(raw)} of {HEADER_BYTES} bytes)")
    header = np.frombuffer(raw, dtype="<i4")
    if header[0] != MAGIC:
        raise ShardError(f"{path}: bad magic {header[0]} (expected {MAGIC}); not an llm.c shard")
    if header[1] != VERSION:
        raise ShardError(f"{path}: unsupported shard version {header[1]} (expected {VERSION})")
    n_tokens = int(header[2])
    expected = HEADER_BYTES + n_tokens * TOKEN_DTYPE.itemsize
    if size != expected:
        raise ShardError(
            f"{path}: size {size} bytes does not match header ({n_tokens} tokens -> {expected} bytes)"
        )
    return n_tokens


def read_header(path: str | os.PathLike) -> int:
    """Validate a shard's header and size; returns its token count."""
    path = Path(path)
    with _open_regular(path) as f:
        return _read_header(path, f)


# Tokens per step of a whole-shard range check: 32 MiB of uint16, so its memory stays bounded
# whatever the shard's size (the memmap's pages are the page cache's, not the process's).
RANGE_CHECK_TOKENS = 1 << 24


def check_token_ids(tokens: np.ndarray, vocab_size: int, path: str | os.PathLike,
                    offset: int = 0, chunk: int = RANGE_CHECK_TOKENS) -> None:
    """Raise ShardError naming `path` and the token offset of the first id >= `vocab_size`;
    `tokens` is the shard's run starting at token `offset` (a batch just read, or all of it).

    A model's embedding has `vocab_size` real rows (plus, in padded models, rows no tokenizer
    emits): an id past them either fails deep inside torch, naming nothing, or trains silently
    on a padding row. The readers call this on each batch as they read it, where a max over
    tokens already in memory costs nothing; a whole-shard check (a read of every token) is for
    tools that want one, not for the start of every run."""
    for start in range(0, len(tokens), chunk):
        part = np.asarray(tokens[start : start + chunk])
        if part.size and int(part.max()) >= vocab_size:
            at = int(np.argmax(part >= vocab_size))
            raise ShardError(
                f"{path}: token id {int(part[at])} at token offset {offset + start + at} is "
                f"outside the model's vocabulary of {vocab_size} ids; the shard was not written "
                f"for this model or is corrupt"
            )


def open_tokens(path: str | os.PathLike) -> np.memmap:
    """Memory-map a shard's tokens (uint16, read-only) after validating its header. Ids are not
    range-checked here: the reader checks each batch it takes (`check_token_ids`)."""
    path = Path(path)
    with _open_regular(path) as f:
        n_tokens = _read_header(path, f)
        # mapped from the descriptor already checked, not reopened by name
        return np.memmap(f, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(n_tokens,))


class ShardWriter:
    """Stream tokens into one shard without holding them in memory: a zero header first, the
    body appended, the real header written at `close()`. Use it inside a staging directory (see
    `pipelines.atomic`) or write to a temporary name: until closed the header is all zeros (no
    magic), so `read_header` rejects a half-written file."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.n_tokens = 0
        self._f = open(self.path, "wb")
        self._f.write(np.zeros(HEADER_INTS, dtype="<i4").tobytes())

    def write(self, tokens: np.ndarray) -> None:
        body = np.asarray(tokens)
        if body.dtype != TOKEN_DTYPE:  # uint16 input needs no range check (the hot path)
            if body.size and (body.min() < 0 or body.max() > MAX_TOKEN):
                raise ShardError(f"{self.path}: token ids must lie in [0, {MAX_TOKEN}]")
            body = body.astype(TOKEN_DTYPE)
        self._f.write(memoryview(np.ascontiguousarray(body)).cast("B"))
        self.n_tokens += body.size

    def close(self) -> Path:
        self._f.seek(0)
        self._f.write(make_header(self.n_tokens).tobytes())
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        return self.path

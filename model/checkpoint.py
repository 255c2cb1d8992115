"""Model checkpoints: a directory holding `config.json` (the GPTConfig) and `model.safetensors`.

Loading never unpickles: weights are safetensors, everything else is JSON. A checkpoint is made
visible atomically (written under a temporary directory name, then renamed), and
`checkpoint.json` records the sha256 of every file so a corrupted or truncated file is reported
by name instead of silently loading garbage. Training checkpoints add their own files (optimizer
state, RNG, data position) to the same directory through `extra_files`.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import shutil
import stat
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from model.config import GPTConfig
from model.gpt import GPT

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "checkpoint.json"
FORMAT = "hgpt-checkpoint"
FORMAT_VERSION = 1
# The LM head shares wte's storage; safetensors refuses aliased tensors, so it is not stored.
_TIED_KEYS = ("lm_head.weight",)


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete, corrupted or of an unknown format."""


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def unwrap_model(model: torch.nn.Module) -> GPT:
    """The GPT inside torch.compile and/or DistributedDataParallel wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def model_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Weights to store: contiguous CPU tensors, tied head dropped."""
    model = unwrap_model(model)
    return {
        k: v.detach().to("cpu").contiguous()
        for k, v in model.state_dict().items()
        if k not in _TIED_KEYS
    }


class CheckpointWriteError(CheckpointError):
    """Writing a checkpoint failed (a full disk, a quota, an I/O error); nothing of it is left
    behind. `kind` is "disk full" (what a user can act on: free space, then resume) or "write
    error"; `detail` the OS's words; `errno` the OS error number when one is known."""

    def __init__(self, message: str, kind: str = "write error", detail: str = "",
                 errno_: int | None = None):
        super().__init__(message)
        self.kind, self.detail, self.errno = kind, detail or message, errno_

    @classmethod
    def of(cls, directory: Path, exc: BaseException) -> "CheckpointWriteError":
        number = exc.errno if isinstance(exc, OSError) else None
        # safetensors wraps the OS error in its own exception, whose text ends "(os error N)".
        if number is None and (m := re.search(r"os error (\d+)", str(exc))):
            number = int(m.group(1))
        kind = "disk full" if number in (errno.ENOSPC, errno.EDQUOT) else "write error"
        detail = os.strerror(number) if number is not None else str(exc)
        return cls(f"{directory}: {kind} writing checkpoint ({detail})", kind, detail, number)


def write_checkpoint(
    directory: str | os.PathLike,
    model: GPT,
    extra_files: dict[str, Callable[[Path], None]] | None = None,
    metadata: dict | None = None,
) -> Path:
    """Write `model` (and any extra files, each written by a callable given its path) as one
    checkpoint directory, atomically: a crash leaves either the old state or the complete new one.

    A write that fails (CheckpointWriteError: a full disk, an I/O error) removes its temporary
    directory, so a disk that filled up does not stay full of half checkpoints."""
    final = Path(directory)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        (tmp / CONFIG_FILE).write_text(unwrap_model(model).config.to_json())
        save_file(model_state_dict(model), str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        for name, write in (extra_files or {}).items():
            write(tmp / name)
        files = sorted(p.name for p in tmp.iterdir())
        index = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "files": {name: sha256_file(tmp / name) for name in files},
            "metadata": metadata or {},
        }
        _write_json_synced(tmp / INDEX_FILE, index)
        for name in files:
            _fsync(tmp / name)
        _fsync(tmp)
        _publish(tmp, final)
    except BaseException as exc:
        # Also on KeyboardInterrupt: what a kill -9 leaves behind, the next run removes.
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, (OSError, SafetensorError)):
            raise CheckpointWriteError.of(final, exc) from None
        raise
    _fsync(final.parent)
    return final


def _publish(tmp: Path, final: Path) -> None:
    """Rename the complete `tmp` to `final`. A checkpoint of the same name is moved aside first
    and put back if the rename fails, so `final` never disappears."""
    if not final.exists():
        os.replace(tmp, final)
        return
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


def verify_checkpoint(directory: str | os.PathLike) -> dict:
    """Check the index and every file's hash; returns the index. Raises CheckpointError naming
    the first file that is missing or whose bytes changed."""
    directory = Path(directory)
    index_path = directory / INDEX_FILE
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: checkpoint directory does not exist")
    try:
        index = json.loads(index_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{index_path}: missing; not a complete checkpoint") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{index_path}: corrupted index ({exc})") from None
    if not isinstance(index, dict):
        raise CheckpointError(f"{index_path}: corrupted index (not a JSON object)")
    if index.get("format") != FORMAT or index.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{index_path}: unknown checkpoint format {index.get('format')!r} "
            f"version {index.get('version')!r}"
        )
    files = index.get("files")
    if not isinstance(files, dict):
        raise CheckpointError(f"{index_path}: 'files' is not a mapping of file name to sha256")
    # Every name is checked before any file is touched: a hostile index must not make us read,
    # or even reveal the existence of, a file outside the checkpoint directory.
    for name in files:
        _check_file_name(index_path, name)
    for name, expected in files.items():
        path = directory / name
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            raise CheckpointError(f"{path}: missing from checkpoint") from None
        if stat.S_ISLNK(mode):  # a link could point anywhere; the writer never makes one
            raise CheckpointError(f"{path}: is a symbolic link; checkpoint files must be "
                                  f"regular files inside the checkpoint directory")
        if not stat.S_ISREG(mode):
            raise CheckpointError(f"{path}: not a regular file")
        if sha256_file(path) != expected:
            raise CheckpointError(
                f"{path}: corrupted or truncated (sha256 differs from {INDEX_FILE})"
            )
    return index


def _check_file_name(index_path: Path, name) -> None:
    """A file name listed in the index must name a file directly inside the checkpoint
    directory: no separators, no '..', no absolute path."""
    if (not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name
            or "\0" in name or os.path.isabs(name)):
        raise CheckpointError(
            f"{index_path}: refusing file name {name!r}; checkpoint files must be plain names "
            f"inside the checkpoint directory")


# A model config is a few hundred bytes (transformers' GPT-2 config.json about one KB): a bigger
# "config" is not one, and is refused before it is read into memory.
MAX_CONFIG_BYTES = 1 << 20
# safetensors' own reader refuses headers over 100 MB too; checked here first so the error names
# the limit, and a hostile 8-byte length (2**62) never becomes an allocation.
MAX_HEADER_BYTES = 100_000_000
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
                "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4,
                "I64": 8, "U64": 8, "F64": 8, "C64": 8}
# Model weights are floats; an integer tensor would be cast silently by load_state_dict.
_WEIGHT_DTYPES = ("F16", "BF16", "F32", "F64")


def _open_regular(path: Path):
    """`path` opened for reading, refused unless it is a regular file. O_NONBLOCK so that a FIFO
    under the name cannot hang the open (it has no effect on reading a regular file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror})") from None
    f = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        f.close()
        raise CheckpointError(f"{path}: not a regular file")
    return f


def read_json_file(path: str | os.PathLike, limit: int = MAX_CONFIG_BYTES):
    """A small JSON file's content; CheckpointError naming the file if it is missing, not a
    regular file, over `limit` bytes (read no further) or not JSON."""
    path = Path(path)
    with _open_regular(path) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise CheckpointError(f"{path}: over the limit of {limit} bytes for a config file "
                              f"(MAX_CONFIG_BYTES)")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, deep nesting
        raise CheckpointError(f"{path}: invalid JSON ({exc})") from None


def read_config(directory: str | os.PathLike) -> GPTConfig:
    """The GPTConfig in a checkpoint directory. GPTConfig refuses sizes over SIZE_LIMITS, so a
    hostile config is refused here, before any model is built from it."""
    path = Path(directory) / CONFIG_FILE
    data = read_json_file(path)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: invalid model config (not a JSON object)")
    try:
        return GPTConfig.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid model config ({exc})") from None


def read_safetensors_header(path: str | os.PathLike) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Every tensor's (dtype, shape) in a safetensors file, from its header alone: no tensor
    data is read. The header must describe the file exactly (tensors back to back, covering all
    the bytes after the header, as safetensors requires), so a shape that passes is backed by
    bytes on disk and building a model of that shape costs what the file weighs, no more."""
    path = Path(path)
    with _open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        prefix = f.read(8)  # little-endian u64: the length of the JSON header that follows
        if len(prefix) < 8:
            raise CheckpointError(f"{path}: corrupted or truncated safetensors file "
                                  f"({size} bytes, shorter than its 8-byte header length)")
        length = int.from_bytes(prefix, "little")
        if length > MAX_HEADER_BYTES:
            raise CheckpointError(f"{path}: safetensors header length {length} exceeds the limit "
                                  f"of {MAX_HEADER_BYTES} bytes (MAX_HEADER_BYTES)")
        if length > size - 8:
            raise CheckpointError(f"{path}: corrupted or truncated safetensors file (header of "
                                  f"{length} bytes, file of {size})")
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path}: corrupted safetensors header ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupted safetensors header (not a JSON object)")
    header.pop("__metadata__", None)
    tensors, spans = {}, []
    for name, entry in header.items():
        try:
            dtype, shape, (begin, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
            ok = dtype in _DTYPE_BYTES and all(
                type(n) is int and n >= 0 for n in (*shape, begin, end))
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise CheckpointError(f"{path}: corrupted safetensors header (entry of tensor {name!r})")
        if end - begin != math.prod(shape) * _DTYPE_BYTES[dtype]:
            raise CheckpointError(f"{path}: corrupted safetensors header (tensor {name} of shape "
                                  f"{shape} {dtype} spans {end - begin} bytes)")
        tensors[name] = (dtype, shape)
        spans.append((begin, end, name))
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise CheckpointError(f"{path}: corrupted safetensors header (tensor {name}'s data "
                                  f"overlaps another's or leaves a gap)")
        position = end
    if position != size - 8 - length:
        raise CheckpointError(f"{path}: corrupted or truncated safetensors file (its header "
                              f"describes {position} bytes of tensors, the file holds "
                              f"{size - 8 - length})")
    return tensors


def expected_shapes(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    """The shape of every stored weight of the GPT that `config` builds, by name (tied head
    left out). Built on the meta device: the module tree is the real one, no memory is
    allocated, and the time is bounded by SIZE_LIMITS['n_layer']."""
    with torch.device("meta"):
        model = GPT(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if k not in _TIED_KEYS}


def check_weights_header(
    weights: Path,
    found: dict[str, tuple[str, tuple[int, ...]]],
    expected: dict[str, tuple[int, ...]],
    config_path: Path,
) -> None:
    """Compare the tensors a weights file declares (`found`, from read_safetensors_header) with
    those `config_path`'s config needs; CheckpointError naming the tensor, the file and both
    shapes at the first difference."""
    for name, shape in expected.items():
        if name not in found:
            raise CheckpointError(f"{weights}: tensor {name} is missing ({config_path} "
                                  f"expects shape {shape})")
        dtype, shape_in_file = found[name]
        if shape_in_file != shape:
            raise CheckpointError(f"{weights}: tensor {name} has shape {shape_in_file}, "
                                  f"{config_path} expects {shape}")
        if dtype not in _WEIGHT_DTYPES:
            raise CheckpointError(f"{weights}: tensor {name} is {dtype}; weights must be one of "
                                  f"{', '.join(_WEIGHT_DTYPES)}")
    unexpected = sorted(set(found) - set(expected))
    if unexpected:
        raise CheckpointError(f"{weights}: tensors that {config_path} does not have: "
                              f"{', '.join(unexpected[:5])}")


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a safetensors file, turning the library's terse errors into one that names the file.
    The header is checked first (read_safetensors_header), so what is loaded is what the file
    holds, never more."""
    path = Path(path)
    read_safetensors_header(path)
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: corrupted or truncated safetensors file ({exc})") from None


def load_state_into(model: GPT, state: dict[str, torch.Tensor], source: Path) -> None:
    expected = set(model_state_dict(model))
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: weights do not match the config "
            f"(missing: {missing[:5]}, unexpected: {unexpected[:5]})"
        )
    own = model.state_dict()
    for key, tensor in state.items():
        if own[key].shape != tensor.shape:
            raise CheckpointError(
                f"{source}: {key} has shape {tuple(tensor.shape)}, config expects {tuple(own[key].shape)}"
            )
    model.load_state_dict(state, strict=False)  # strict=False only for the tied lm_head.weight


def load_model(
    directory: str | os.PathLike, device: str | torch.device = "cpu", verify: bool = True
) -> GPT:
    """Rebuild the GPT stored in a checkpoint directory, bit-for-bit.

    Nothing is allocated on a file's word: the config is held to SIZE_LIMITS, then every shape
    it implies is compared with the weights file's header, and only then are the weights read
    and the model built."""
    directory = Path(directory)
    if verify:
        index = verify_checkpoint(directory)
        # Only files the index lists were checked (regular, inside the directory, hash): the
        # two read here must be among them.
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if name not in index["files"]:
                raise CheckpointError(f"{directory / INDEX_FILE}: does not list {name}; "
                                      f"not a model checkpoint")
    config = read_config(directory)
    weights = directory / WEIGHTS_FILE
    check_weights_header(weights, read_safetensors_header(weights), expected_shapes(config),
                         directory / CONFIG_FILE)
    state = load_weights(weights)
    # Built with the usual random init, then overwritten: about a second at 124M, and one
    # construction path instead of meta-device tricks.
    model = GPT(config)
    load_state_into(model, state, weights)
    return model.to(device)


def _write_json_synced(path: Path, data: dict) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


CHECKPOINTS_SUBDIR = "checkpoints"


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint directory as given, or for a training run directory the newest checkpoint
    under `checkpoints/` that verifies (a crash can leave a newer, broken one behind)."""
    path = Path(path)
    if (path / INDEX_FILE).exists():
        return path
    candidates = sorted(
        (p for p in (path / CHECKPOINTS_SUBDIR).glob("*") if p.is_dir() and not p.name.startswith(".")),
        reverse=True,
    )
    errors = []
    for candidate in candidates:
        try:
            verify_checkpoint(candidate)
            return candidate
        except CheckpointError as exc:
            errors.append(str(exc))
    detail = f"; skipped: {'; '.join(errors)}" if errors else ""
    raise CheckpointError(f"{path}: no valid checkpoint found{detail}")

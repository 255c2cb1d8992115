"""Model checkpoints: a directory holding `config.json` (the GPTConfig) and `model.safetensors`.

Loading never unpickles: weights are safetensors, everything else is JSON. A checkpoint is made
visible atomically (written under a temporary directory name, then renamed), and
`checkpoint.json` records the sha256 of every file so a corrupted or truncated file is reported
by name instead of silently loading garbage. Training checkpoints add their own files (optimizer
state, RNG, data position) to the same directory through `extra_files`.
"""

from __future__ import annotations

import hashlib
import json
import os
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


def write_checkpoint(
    directory: str | os.PathLike,
    model: GPT,
    extra_files: dict[str, Callable[[Path], None]] | None = None,
    metadata: dict | None = None,
) -> Path:
    """Write `model` (and any extra files, each written by a callable given its path) as one
    checkpoint directory, atomically: a crash leaves either the old state or the complete new one."""
    final = Path(directory)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
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
    if final.exists():  # replacing a checkpoint of the same name: move the old one aside first
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    _fsync(final.parent)
    return final


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


def read_config(directory: str | os.PathLike) -> GPTConfig:
    path = Path(directory) / CONFIG_FILE
    try:
        return GPTConfig.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid model config ({exc})") from None


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a safetensors file, turning the library's terse errors into one that names the file."""
    path = Path(path)
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
    """Rebuild the GPT stored in a checkpoint directory, bit-for-bit."""
    directory = Path(directory)
    if verify:
        verify_checkpoint(directory)
    config = read_config(directory)
    state = load_weights(directory / WEIGHTS_FILE)
    # Built with the usual random init, then overwritten: about a second at 124M, and one
    # construction path instead of meta-device tricks.
    model = GPT(config)
    load_state_into(model, state, directory / WEIGHTS_FILE)
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

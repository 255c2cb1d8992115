"""Training checkpoints: everything needed to continue a run bit for bit, never a pickle.

    RUN_DIR/checkpoints/step_00000100/
        config.json, model.safetensors   the model (model.checkpoint.write_checkpoint)
        optimizer.safetensors            AdamW moments, keyed "<param name>.exp_avg" / ".exp_avg_sq"
        optimizer.json                   step count, per-group hyper-parameters and names
        rng.safetensors                  torch RNG states (CPU and CUDA) as uint8 tensors
        trainer_state.json               step, tokens seen, data position, Python/NumPy RNG,
                                         loss-scaler state
        train_config.json                the TrainConfig
        checkpoint.json                  sha256 of every file (written last)

The directory appears atomically (written under a temporary name, then renamed; see
model/checkpoint.py), so a crash mid-write leaves the previous checkpoint as the newest valid
one. A write that fails (a full disk) removes its temporary directory and raises
CheckpointWriteError, naming the step and the previous checkpoint, which is intact. Only the
newest `keep_last` are kept: with keep_last >= 2 the oldest go *before* the write, so the disk
needs room for keep_last checkpoints, not keep_last + 1.

The trainer state also records a fingerprint of the training shards (`shard_fingerprint`), so
a resume on shards whose contents changed is refused, naming the shard.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from model.checkpoint import (
    CHECKPOINTS_SUBDIR,
    CheckpointError,
    CheckpointWriteError,
    load_state_into,
    load_weights,
    resolve_checkpoint,
    unwrap_model,
    write_checkpoint,
)
from pipelines.atomic import SUCCESS
from training.config import TrainConfig
from training.optim import AdamW

STATE_FILE = "trainer_state.json"
OPTIMIZER_TENSORS = "optimizer.safetensors"
OPTIMIZER_JSON = "optimizer.json"
RNG_FILE = "rng.safetensors"
CONFIG_FILE = "train_config.json"


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS_SUBDIR / f"step_{step:08d}"


def _write_json(data: dict):
    return lambda path: path.write_text(json.dumps(data, indent=2, sort_keys=True))


def capture_rng() -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, json) holding every RNG a training step may draw from."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = state
    np_state = np.random.get_state()
    py_state = random.getstate()
    return tensors, {
        "numpy": [np_state[0], np_state[1].tolist(), *[int(v) if i < 2 else float(v)
                                                      for i, v in enumerate(np_state[2:])]],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def restore_rng(tensors: dict[str, torch.Tensor], states: dict) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))


def save_training_checkpoint(run_dir: str | Path, step: int, model: torch.nn.Module,
                             optimizer: AdamW, cfg: TrainConfig, trainer_state: dict,
                             keep_last: int, previous: str | Path | None = None) -> Path:
    """Write checkpoint `step_{step}` under RUN_DIR/checkpoints and prune old ones. `previous`
    is the run's newest complete checkpoint (written by it or resumed from), which survives
    until the new one is complete. Raises CheckpointWriteError on a failed write."""
    opt = optimizer.state_dict()
    opt_tensors = {f"{name}.{key}": t.detach().to("cpu").contiguous()
                   for name, moments in opt.pop("state").items() for key, t in moments.items()}
    rng_tensors, rng_json = capture_rng()
    state = {**trainer_state, "step": step, "rng": rng_json}
    files = {
        OPTIMIZER_TENSORS: lambda p: save_file(opt_tensors, str(p)),
        OPTIMIZER_JSON: _write_json(opt),
        RNG_FILE: lambda p: save_file(rng_tensors, str(p)),
        STATE_FILE: _write_json(state),
        CONFIG_FILE: _write_json(cfg.to_dict()),
    }
    _make_room(run_dir, keep_last, previous)
    try:
        path = write_checkpoint(checkpoint_dir(run_dir, step), unwrap_model(model),
                                extra_files=files, metadata={"step": step, "kind": "training"})
    except CheckpointWriteError as exc:
        kept = (f"previous checkpoint {Path(previous).name} intact" if previous
                else "no earlier checkpoint of this run")
        then = "free space" if exc.kind == "disk full" else "fix the disk"
        raise CheckpointWriteError(
            f"{exc.kind} writing checkpoint step {step} under {Path(run_dir) / CHECKPOINTS_SUBDIR}: "
            f"{exc.detail}; {kept}; {then}, then run again with --resume",
            exc.kind, exc.detail, exc.errno) from None
    prune_checkpoints(run_dir, keep_last)
    return path


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoint directories of a run, oldest first (temporary ones excluded)."""
    root = Path(run_dir) / CHECKPOINTS_SUBDIR
    return sorted(p for p in root.glob("step_*") if p.is_dir())


def _make_room(run_dir: str | Path, keep_last: int, previous: str | Path | None) -> None:
    """Delete the oldest checkpoints before a write, so that keep_last - 1 remain and the new
    one makes keep_last. Only those older than `previous` go: the newest complete checkpoint
    must outlive a write that may fail. With keep_last = 1 that one is the only one kept, so
    nothing can go first: such a run needs room for two checkpoints while it writes."""
    if keep_last < 2 or previous is None:
        return
    existing = list_checkpoints(run_dir)  # oldest first: names hold zero-padded steps
    for old in existing[: max(0, len(existing) - (keep_last - 1))]:
        if old.name >= Path(previous).name:
            break
        shutil.rmtree(old, ignore_errors=True)


def prune_checkpoints(run_dir: str | Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` checkpoints, and temporary directories left by
    writers that crashed."""
    for old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    remove_partial_checkpoints(run_dir)


def refuse_fresh_run_over_checkpoints(run_dir: str | Path) -> None:
    """A run without resume on a directory that holds another run's checkpoints would mix the
    two: pruning goes by step, so the old run's later checkpoints would outlive the new run's,
    and a later --resume would continue the old run. Such a start is refused."""
    found = list_checkpoints(run_dir)
    if found:
        raise ValueError(
            f"{Path(run_dir)}: holds checkpoints of an earlier run (newest {found[-1].name}); "
            f"continue it with --resume, or start this run in another --out")


def remove_partial_checkpoints(run_dir: str | Path) -> None:
    """Remove the temporary directories (`.step_N.tmp-PID`, `.step_N.old-PID`) of writes that
    never finished. Called by the holder of the run's lock: no other writer can be at work, so
    every one of them is stale (a kill -9 mid-write leaves one; a full disk would keep it)."""
    for stale in (Path(run_dir) / CHECKPOINTS_SUBDIR).glob(".step_*"):
        shutil.rmtree(stale, ignore_errors=True)


# ---- shard fingerprint ------------------------------------------------------------------------
# Hashing every shard at each resume would read the whole corpus (20 GB for GPT-2 124M); the
# fingerprint reads about 1 MiB per shard instead: its size, and a hash of the header and of
# evenly spaced blocks. A tokenizer rerun on other documents, another document order, or a
# truncated or swapped file changes it; an edit of a few bytes between two blocks may not, and
# the data stage's own content hash (in its success marker next to the shards, when present)
# covers that case for its outputs. Modification times are left out on purpose: a copy of the
# same shards to another disk is the same data.
_SAMPLE_BLOCKS, _SAMPLE_BYTES = 16, 64 << 10


def _sample_digest(path: Path, size: int) -> str:
    h = hashlib.blake2b(digest_size=16)
    last = max(0, size - _SAMPLE_BYTES)
    offsets = sorted({last * i // (_SAMPLE_BLOCKS - 1) for i in range(_SAMPLE_BLOCKS)})
    fd = os.open(path, os.O_RDONLY)
    try:
        for offset in offsets:
            h.update(os.pread(fd, _SAMPLE_BYTES, offset))
    finally:
        os.close(fd)
    return h.hexdigest()


def _stage_hash(directory: Path) -> str | None:
    try:
        return json.loads((directory / SUCCESS).read_text())["result"]["content_hash"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def shard_fingerprint(paths: list[Path]) -> list[dict]:
    """One entry per shard, in order: name, bytes, sample (hash of sampled blocks), stage_hash
    (the data stage's content hash of the shard's directory, or None)."""
    stage_hashes: dict[Path, str | None] = {}
    out = []
    for path in map(Path, paths):
        size = path.stat().st_size
        if path.parent not in stage_hashes:
            stage_hashes[path.parent] = _stage_hash(path.parent)
        out.append({"name": path.name, "bytes": size, "sample": _sample_digest(path, size),
                    "stage_hash": stage_hashes[path.parent]})
    return out


class ShardsChangedError(ValueError):
    """A resume on training shards whose contents differ from those the checkpoint was
    trained on."""


def check_shard_fingerprint(saved: list[dict] | None, current: list[dict], paths: list[Path],
                            checkpoint: str | Path) -> None:
    """Refuse to resume when a shard changed since `checkpoint` was written. A checkpoint from
    before fingerprints, or a different list of shards (which the loader reports), passes."""
    if not saved or [s["name"] for s in saved] != [c["name"] for c in current]:
        return
    for was, now, path in zip(saved, current, paths):
        if was["bytes"] != now["bytes"]:
            what = f"its size changed from {was['bytes']} to {now['bytes']} bytes"
        elif was["sample"] != now["sample"]:
            what = "its contents differ"
        elif was["stage_hash"] and now["stage_hash"] and was["stage_hash"] != now["stage_hash"]:
            what = f"the data stage that wrote {path.parent} records another content hash"
        else:
            continue
        raise ShardsChangedError(
            f"{path}: shard changed since checkpoint {Path(checkpoint).name} was written "
            f"({what}); resume with the shards this run was trained on, or start a new run "
            f"(another --out, or without --resume)")


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint that verifies (sha256 of every file), or None if there is none."""
    if not list_checkpoints(run_dir):
        return None
    try:
        return resolve_checkpoint(run_dir)
    except CheckpointError:
        return None


def load_training_checkpoint(path: str | Path, model: torch.nn.Module,
                             optimizer: AdamW) -> dict:
    """Restore model weights, optimizer state and RNG states from `path` (already verified);
    returns the trainer state (step, tokens_seen, data position, ...)."""
    path = Path(path)
    for name in (STATE_FILE, OPTIMIZER_JSON, OPTIMIZER_TENSORS, RNG_FILE):
        if not (path / name).is_file():
            raise CheckpointError(f"{path / name}: missing; not a training checkpoint")
    raw = unwrap_model(model)
    load_state_into(raw, load_weights(path / "model.safetensors"), path / "model.safetensors")
    opt = json.loads((path / OPTIMIZER_JSON).read_text())
    tensors = load_weights(path / OPTIMIZER_TENSORS)
    opt["state"] = {}
    for key, tensor in tensors.items():
        name, _, moment = key.rpartition(".")
        opt["state"].setdefault(name, {})[moment] = tensor
    try:
        optimizer.load_state_dict(opt)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    state = json.loads((path / STATE_FILE).read_text())
    restore_rng(load_weights(path / RNG_FILE), state["rng"])
    return state


def read_train_config(path: str | Path) -> TrainConfig:
    return TrainConfig.from_dict(json.loads((Path(path) / CONFIG_FILE).read_text()))

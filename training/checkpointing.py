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
one. After a successful write only the newest `keep_last` are kept.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from model.checkpoint import (
    CHECKPOINTS_SUBDIR,
    CheckpointError,
    load_state_into,
    load_weights,
    resolve_checkpoint,
    unwrap_model,
    write_checkpoint,
)
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
                             keep_last: int) -> Path:
    """Write checkpoint `step_{step}` under RUN_DIR/checkpoints and prune old ones."""
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
    path = write_checkpoint(checkpoint_dir(run_dir, step), unwrap_model(model), extra_files=files,
                            metadata={"step": step, "kind": "training"})
    prune_checkpoints(run_dir, keep_last)
    return path


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoint directories of a run, oldest first (temporary ones excluded)."""
    root = Path(run_dir) / CHECKPOINTS_SUBDIR
    return sorted(p for p in root.glob("step_*") if p.is_dir())


def prune_checkpoints(run_dir: str | Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` checkpoints, and temporary directories left by
    writers that crashed."""
    for old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in (Path(run_dir) / CHECKPOINTS_SUBDIR).glob(".step_*"):
        shutil.rmtree(stale, ignore_errors=True)


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

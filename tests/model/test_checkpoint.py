"""Checkpoints: bit-for-bit across processes, clear errors for corrupted files, no pickle."""

import json
import os
import subprocess
import sys

import pytest
import torch

from model import GPT, GPTConfig
from model.checkpoint import (
    CheckpointError,
    load_model,
    resolve_checkpoint,
    verify_checkpoint,
    write_checkpoint,
)

CONFIG = GPTConfig(block_size=32, vocab_size=300, padded_vocab_size=320, n_layer=2, n_head=2, n_embd=16)


@pytest.fixture
def checkpoint(tmp_path):
    model = GPT(CONFIG, seed=5)
    return write_checkpoint(tmp_path / "ckpt", model), model


def test_loads_bit_for_bit_in_another_process(checkpoint, tmp_path):
    path, model = checkpoint
    # A separate interpreter loads the checkpoint and re-saves the raw tensors it got.
    script = (
        "import sys; from model.checkpoint import load_model;"
        "from safetensors.torch import save_file;"
        "m = load_model(sys.argv[1]);"
        "save_file({k: v.contiguous() for k, v in m.state_dict().items() if k != 'lm_head.weight'}, sys.argv[2])"
    )
    out = tmp_path / "reloaded.safetensors"
    subprocess.run([sys.executable, "-c", script, str(path), str(out)], check=True)
    from safetensors.torch import load_file

    reloaded = load_file(out)
    own = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    assert reloaded.keys() == own.keys()
    for key, tensor in own.items():
        assert torch.equal(reloaded[key], tensor), key
    assert load_model(path).config == CONFIG


def test_loaded_model_computes_the_same_logits(checkpoint):
    path, model = checkpoint
    idx = torch.randint(0, 300, (2, 10))
    with torch.no_grad():
        assert torch.equal(load_model(path)(idx)[0], model(idx)[0])


def test_truncated_weights_file_is_named(checkpoint):
    path, _ = checkpoint
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="model.safetensors.*(corrupted|truncated)"):
        load_model(path)
    # Even without hash verification the safetensors reader's failure names the file.
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_model(path, verify=False)


def test_flipped_byte_is_detected(checkpoint):
    path, _ = checkpoint
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        verify_checkpoint(path)


def test_garbage_header_is_named(checkpoint):
    path, _ = checkpoint
    (path / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_model(path, verify=False)


def test_missing_index_means_incomplete(checkpoint):
    path, _ = checkpoint
    (path / "checkpoint.json").unlink()
    with pytest.raises(CheckpointError, match="checkpoint.json.*missing"):
        load_model(path)


def test_invalid_config_is_named(checkpoint):
    path, _ = checkpoint
    (path / "config.json").write_text(json.dumps({"n_layer": -1}))
    with pytest.raises(CheckpointError, match="config.json"):
        load_model(path, verify=False)


def test_weights_are_safetensors_not_pickle(checkpoint):
    path, _ = checkpoint
    head = (path / "model.safetensors").read_bytes()[:8]
    header_len = int.from_bytes(head, "little")
    header = json.loads((path / "model.safetensors").read_bytes()[8 : 8 + header_len])
    assert "transformer.wte.weight" in header
    assert not any(p.suffix in (".pt", ".pth", ".bin", ".pkl") for p in path.iterdir())


def test_resolve_skips_a_broken_newer_checkpoint(tmp_path):
    run = tmp_path / "run"
    model = GPT(CONFIG, seed=1)
    good = write_checkpoint(run / "checkpoints" / "step_00000010", model)
    broken = write_checkpoint(run / "checkpoints" / "step_00000020", model)
    (broken / "model.safetensors").write_bytes(b"partial")
    assert resolve_checkpoint(run) == good
    assert resolve_checkpoint(good) == good
    with pytest.raises(CheckpointError, match="no valid checkpoint"):
        resolve_checkpoint(tmp_path / "empty")


def test_rewrite_replaces_atomically(checkpoint):
    path, _ = checkpoint
    other = GPT(CONFIG, seed=9)
    write_checkpoint(path, other)
    assert torch.equal(load_model(path).transformer.wte.weight, other.transformer.wte.weight)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]


def _add_to_index(path, name, digest):
    index_path = path / "checkpoint.json"
    index = json.loads(index_path.read_text())
    index["files"][name] = digest
    index_path.write_text(json.dumps(index))


def _spy_on_file_access(monkeypatch):
    """Every path verify_checkpoint opens, stats or hashes, so a test can assert that a file
    outside the checkpoint was never touched."""
    import os

    import model.checkpoint as ckpt

    touched = []
    for module, name in ((os, "stat"), (os, "lstat"), (ckpt, "sha256_file")):
        real = getattr(module, name)

        def spy(path, *args, _real=real, **kwargs):
            touched.append(str(path))
            return _real(path, *args, **kwargs)

        monkeypatch.setattr(module, name, spy)
    real_open = open
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: (touched.append(str(path)),
                                                                real_open(path, *a, **k))[1])
    return touched


def test_index_cannot_name_a_file_outside_the_checkpoint(checkpoint, tmp_path, monkeypatch):
    path, _ = checkpoint
    from model.checkpoint import sha256_file

    # A file outside the checkpoint, reached by '..' with its correct hash: still refused, so a
    # hostile checkpoint.json cannot have us read (and hash-compare) an arbitrary file.
    outside = tmp_path / "secret.txt"
    outside.write_text("not part of any checkpoint")
    name = "../secret.txt"
    assert (path / name).resolve() == outside.resolve()
    _add_to_index(path, name, sha256_file(outside))
    touched = _spy_on_file_access(monkeypatch)
    with pytest.raises(CheckpointError, match=r"checkpoint\.json.*refusing file name '\.\./secret"):
        verify_checkpoint(path)
    assert not [p for p in touched if "secret" in p], touched


@pytest.mark.parametrize("name", ["../../../../etc/hostname", "/etc/shadow", "/etc/hostname",
                                  "sub/model.safetensors", "..", "."])
def test_index_names_must_be_plain_names_in_the_directory(checkpoint, monkeypatch, name):
    path, _ = checkpoint
    from model.checkpoint import sha256_file

    target = path / name
    # The right hash where the file is readable: the hash matching must not make it pass.
    digest = sha256_file(target) if target.is_file() and os.access(target, os.R_OK) else "0" * 64
    _add_to_index(path, name, digest)
    touched = _spy_on_file_access(monkeypatch)
    with pytest.raises(CheckpointError, match="refusing file name") as err:
        verify_checkpoint(path)
    assert str(path / "checkpoint.json") in str(err.value)
    # Refused before it was stat'ed or opened: whether /etc/shadow exists is not revealed.
    assert not [p for p in touched if "etc" in p or p.endswith(name)], touched
    with pytest.raises(CheckpointError, match="refusing file name"):
        load_model(path)


def test_symlinked_file_in_checkpoint_is_refused(checkpoint, tmp_path):
    path, _ = checkpoint
    from model.checkpoint import sha256_file

    outside = tmp_path / "secret.txt"
    outside.write_text("outside")
    (path / "extra.txt").symlink_to(outside)
    _add_to_index(path, "extra.txt", sha256_file(outside))
    with pytest.raises(CheckpointError, match="extra.txt.*symbolic link"):
        verify_checkpoint(path)


@pytest.mark.parametrize("index", [[], {"format": "hgpt-checkpoint", "version": 1, "files": []}])
def test_malformed_index_is_named(checkpoint, index):
    path, _ = checkpoint
    (path / "checkpoint.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="checkpoint.json"):
        verify_checkpoint(path)

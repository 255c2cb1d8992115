"""`hgpt export-hf` / `hgpt import-hf` round trip through the real console entry point."""

import subprocess
import sys

import torch

from model import GPT, GPTConfig
from model.checkpoint import load_model, write_checkpoint

CONFIG = GPTConfig(block_size=32, vocab_size=50257, padded_vocab_size=50304, n_layer=1, n_head=2, n_embd=16)


def _hgpt(*args):
    return subprocess.run(
        [sys.executable, "-m", "hgpt.cli", *map(str, args)], capture_output=True, text=True
    )


def test_export_then_import_round_trip(tmp_path):
    model = GPT(CONFIG, seed=4)
    ckpt = write_checkpoint(tmp_path / "run" / "checkpoints" / "step_00000001", model)
    # Exporting a run directory picks its newest valid checkpoint.
    done = _hgpt("export-hf", tmp_path / "run", tmp_path / "hf")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "hf" / "model.safetensors").exists()
    done = _hgpt("import-hf", tmp_path / "hf", tmp_path / "back")
    assert done.returncode == 0, done.stderr
    back = load_model(tmp_path / "back")
    # transformers' layout has no padding rows: everything else comes back bit for bit.
    assert back.config == CONFIG.replace(padded_vocab_size=None)
    idx = torch.randint(0, 50257, (1, 12))
    with torch.no_grad():
        assert torch.equal(back(idx)[0], model(idx)[0])
    assert ckpt.exists()


def test_bad_checkpoint_gives_a_clear_error(tmp_path):
    (tmp_path / "ckpt").mkdir()
    done = _hgpt("export-hf", tmp_path / "ckpt", tmp_path / "hf")
    assert done.returncode == 2
    assert "no valid checkpoint" in done.stderr and "Traceback" not in done.stderr


def test_import_refuses_pickle_only_directory(tmp_path):
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text('{"model_type": "gpt2", "vocab_size": 10, "n_layer": 1, "n_head": 1, "n_embd": 4}')
    (hf / "pytorch_model.bin").write_bytes(b"not loaded")
    done = _hgpt("import-hf", hf, tmp_path / "out")
    assert done.returncode == 2
    assert "pickle" in done.stderr and "model.safetensors" in done.stderr

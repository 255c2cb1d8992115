"""`hgpt train` on shards it cannot use: an id the model has no row for (past the vocabulary, or
inside the embedding's padding rows) deep inside a training or validation shard, and a FIFO in a
shard's name. Each ends with exit 2 and one line naming the file (and the token offset), never a
traceback, a hang or a run that trains on a padding row."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines.shard_format import write_shard

REPO = Path(__file__).resolve().parents[2]
HGPT = Path(sys.executable).with_name("hgpt")
# The tiny preset's vocabulary (50257 ids, 50304 embedding rows), on a narrow, shallow body.
SMALL = '{"n_layer": 1, "n_head": 2, "n_embd": 32}'
SHARD_TOKENS = 3000  # 93 windows of 33 tokens: two shards are all read within 3 steps
BAD_AT = {"train": 2345, "val": 1999}


def _train(data: Path, out: Path, *extra: str, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [str(HGPT), "train", "--preset", "tiny", "--data", str(data), "--out", str(out),
           "--max-steps", "3", "--seq-len", "32", "--eval-every", "0", "--eval-tokens", "2048",
           "--checkpoint-every", "0", "--device", "cpu", "--set", f"model_overrides={SMALL}",
           *extra]
    env = {k: v for k, v in os.environ.items() if k != "HGPT_DEBUG"}
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


def _error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in proc.stderr, proc.stderr
    return [line for line in proc.stderr.splitlines() if line.strip()]


@pytest.mark.parametrize("split,bad,order", [
    ("train", 60000, "shuffled"), ("train", 50300, "shuffled"), ("train", 50300, "llmc"),
    ("val", 60000, "shuffled"), ("val", 50300, "shuffled"),
])
def test_an_id_outside_the_vocabulary_deep_in_a_shard_ends_with_one_line(tmp_path, split, bad, order):
    data = tmp_path / "shards"
    data.mkdir()
    rng = np.random.default_rng(0)
    names = ["train_000000.bin", "train_000001.bin", "val_000000.bin"]
    bad_file = {"train": "train_000001.bin", "val": "val_000000.bin"}[split]
    for name in names:
        tokens = rng.integers(0, 50257, SHARD_TOKENS)
        if name == bad_file:
            tokens[BAD_AT[split]] = bad
        write_shard(data / name, tokens)
    proc = _train(data, tmp_path / "run", "--data-order", order)
    assert proc.returncode == 2, proc.stderr
    lines = _error_lines(proc)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("hgpt train: error: ") and str(data / bad_file) in lines[0], lines
    assert f"token id {bad} at token offset {BAD_AT[split]}" in lines[0], lines
    assert "vocabulary of 50257 ids" in lines[0], lines


def test_a_fifo_named_like_a_shard_is_refused_at_once(tmp_path):
    data = tmp_path / "shards"
    data.mkdir()
    os.mkfifo(data / "train_000000.bin")  # nothing ever writes to it: opening it would block
    proc = _train(data, tmp_path / "run", timeout=60)  # a hang fails, not blocks, the test
    assert proc.returncode == 2, proc.stderr
    lines = _error_lines(proc)
    assert len(lines) == 1 and "train_000000.bin" in lines[0] and "a FIFO" in lines[0], lines

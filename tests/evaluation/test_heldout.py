"""Held-out loss: equals a hand-rolled mean over the same windows, is reproducible, and under
torch.distributed (2 gloo ranks) is bit-for-bit the single-process number (HellaSwag too)."""

import json
import math
import multiprocessing
import os

import numpy as np
import pytest
import torch

from evaluation.heldout import evaluate_loss, validation_windows
from evaluation.hellaswag import evaluate_hellaswag
from model import GPT, GPTConfig
from pipelines.shard_format import write_shard

CONFIG = GPTConfig(block_size=32, vocab_size=512, n_layer=2, n_head=2, n_embd=32)
HS_CONFIG = CONFIG.replace(vocab_size=50257)  # HellaSwag text goes through the GPT-2 tokenizer
SEQ_LEN, MAX_TOKENS = 16, 600  # 37 windows: the last global batch is a partial one


def _shards(directory):
    rng = np.random.default_rng(0)
    # Two shards, the first shorter than max_tokens: windows must run across the boundary.
    write_shard(directory / "val_000001.bin", rng.integers(0, 512, 250))
    write_shard(directory / "val_000000.bin", rng.integers(0, 512, 200))  # sorted first
    write_shard(directory / "val_000002.bin", rng.integers(0, 512, 1000))
    return sorted(directory.glob("*.bin"))


def test_matches_hand_rolled_mean_and_is_reproducible(tmp_path):
    shards = _shards(tmp_path)
    model = GPT(CONFIG, seed=0)
    result = evaluate_loss(model, shards, max_tokens=MAX_TOKENS, batch_size=5, seq_len=SEQ_LEN)

    windows = torch.from_numpy(validation_windows(shards, MAX_TOKENS, SEQ_LEN))
    assert windows.shape == (MAX_TOKENS // SEQ_LEN, SEQ_LEN + 1)
    stream = np.concatenate([np.fromfile(p, dtype="<u2", offset=1024) for p in shards])
    assert np.array_equal(windows[1].numpy(), stream[SEQ_LEN : 2 * SEQ_LEN + 1])
    with torch.no_grad():
        _, loss = model(windows[:, :-1], windows[:, 1:])
    assert result.tokens == windows.shape[0] * SEQ_LEN
    assert result.loss == pytest.approx(loss.item(), abs=1e-5)
    assert result.perplexity == pytest.approx(math.exp(result.loss))
    again = evaluate_loss(model, shards, max_tokens=MAX_TOKENS, batch_size=5, seq_len=SEQ_LEN)
    assert again == result
    assert model.training  # the caller's mode is restored


def test_too_few_tokens_is_a_clear_error(tmp_path):
    write_shard(tmp_path / "v.bin", [1, 2, 3])
    with pytest.raises(ValueError, match="fewer than one window"):
        evaluate_loss(GPT(CONFIG), [tmp_path / "v.bin"], max_tokens=100, seq_len=SEQ_LEN)


HELLASWAG = [
    {"ctx": "A man opens the door and", "endings": ["walks in.", "sings.", "a cat.", "is red."], "label": 0},
    {"ctx": "The sun", "endings": ["rises.", "eats.", "the the.", "runs fast."], "label": 0},
    {"ctx": "She", "endings": ["laughs.", "is a.", "dog.", "went home."], "label": 3},
]


def _rank_main(rank, world, port, shard_dir, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = torch.nn.parallel.DistributedDataParallel(GPT(CONFIG, seed=0))
        shards = sorted(shard_dir.glob("*.bin"))
        result = evaluate_loss(model, shards, max_tokens=MAX_TOKENS, batch_size=5, seq_len=SEQ_LEN)
        hs_model = torch.nn.parallel.DistributedDataParallel(GPT(HS_CONFIG, seed=0))
        hs = evaluate_hellaswag(hs_model, shard_dir / "hs.jsonl")
        out.put((rank, result.loss, result.tokens, hs))
    finally:
        torch.distributed.destroy_process_group()


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_ranks_give_the_single_process_result_bit_for_bit(tmp_path):
    shards = _shards(tmp_path)
    (tmp_path / "hs.jsonl").write_text("".join(json.dumps(x) + "\n" for x in HELLASWAG))
    single = evaluate_loss(GPT(CONFIG, seed=0), shards, max_tokens=MAX_TOKENS, batch_size=5,
                           seq_len=SEQ_LEN)
    single_hs = evaluate_hellaswag(GPT(HS_CONFIG, seed=0), tmp_path / "hs.jsonl")
    assert single_hs["n"] == 3
    ctx = multiprocessing.get_context("spawn")
    out, port = ctx.Queue(), _free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, 2, port, tmp_path, out)) for r in range(2)]
    for p in procs:
        p.start()
    try:
        results = sorted(out.get(timeout=120) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    assert results == [(0, single.loss, single.tokens, single_hs), (1, single.loss, single.tokens, single_hs)]

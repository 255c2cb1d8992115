"""Bits per byte: the byte table against tokens whose bytes are known, the formula on a
hand-computed example, and evaluate_loss's bpb against its own definition (bpb x ln 2 x bytes
== the sum of the nats of the targets that have bytes)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evaluation.bpb import bits_per_byte, nats_and_bytes, target_bytes, token_byte_lengths
from evaluation.heldout import evaluate_loss, validation_windows
from model import GPT, GPTConfig
from model.tokenizer import EOT_TOKEN, encode_ordinary, get_encoding
from pipelines.shard_format import write_shard


def test_byte_lengths_of_known_tokens():
    table = token_byte_lengths()
    # "Hello, wörld €" in GPT-2: Hello | , | ' w' | 'ör' (c3 b6 72) | ld | ' €' (20 e2 82 ac)
    ids = encode_ordinary("Hello, wörld €")
    assert [int(table[i]) for i in ids] == [5, 1, 2, 3, 2, 4]
    assert table[EOT_TOKEN] == 0  # a special token covers no text
    assert table[50257:].sum() == 0  # ids GPT-2 does not have (padded rows)
    assert table[:EOT_TOKEN].min() >= 1


def test_hand_computed_bits_per_byte():
    targets = torch.tensor([11, EOT_TOKEN, 15496, 10432])  # ',' 1 byte, EOT 0, 'Hello' 5, ' €' 4
    losses = torch.tensor([1.0, 2.0, 3.0, 4.0])
    nats, n_bytes = nats_and_bytes(losses, targets)
    assert target_bytes(targets).tolist() == [1, 0, 5, 4]
    assert (nats.item(), n_bytes.item()) == (8.0, 10.0)  # EOT's 2 nats are left out
    assert bits_per_byte(8.0, 10.0) == pytest.approx(8 / (math.log(2) * 10), rel=1e-15)
    assert math.isnan(bits_per_byte(1.0, 0))


def test_evaluate_loss_bpb_is_its_definition(tmp_path):
    text = "The quick brown fox jumps over the lazy dog. Zwölf Boxkämpfer jagen Viktor. "
    ids = []
    for i in range(12):  # documents separated by <|endoftext|>, as the shards hold them
        ids += [EOT_TOKEN] + encode_ordinary(text * (1 + i % 3))
    write_shard(tmp_path / "val_000000.bin", ids)
    shards = [tmp_path / "val_000000.bin"]
    seq_len, max_tokens = 32, 400
    model = GPT(GPTConfig(block_size=32, vocab_size=50257, n_layer=1, n_head=2, n_embd=32), seed=0)
    result = evaluate_loss(model, shards, max_tokens=max_tokens, batch_size=3, seq_len=seq_len)

    windows = torch.from_numpy(validation_windows(shards, max_tokens, seq_len))
    y = windows[:, 1:]
    with torch.no_grad():
        logits, _ = model(windows[:, :-1])
    losses = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="none")
    counted = y.reshape(-1) != EOT_TOKEN
    assert (~counted).any()  # the example does hold <|endoftext|> targets
    # The bytes, independently of the table: the decoded text of the targets.
    assert result.bytes == len(get_encoding().decode_bytes(y.reshape(-1)[counted].tolist()))
    nats = losses.double()[counted].sum().item()
    assert result.bpb * math.log(2) * result.bytes == pytest.approx(nats, rel=1e-9)
    assert result.loss == pytest.approx(losses.double().mean().item(), rel=1e-6)
    assert result.tokens == y.numel()


def test_progress_reports_every_batch(tmp_path):
    write_shard(tmp_path / "val_000000.bin", np.arange(1000) % 400)
    model = GPT(GPTConfig(block_size=16, vocab_size=512, n_layer=1, n_head=2, n_embd=16), seed=0)
    seen = []
    result = evaluate_loss(model, [tmp_path / "val_000000.bin"], max_tokens=160, batch_size=4,
                           seq_len=16, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(0, 160), (64, 160), (128, 160), (160, 160)] and result.tokens == 160

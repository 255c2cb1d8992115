"""ShardLoader: both orders deterministic, resumable, DDP-sliced; the shuffled order serves every
window once per epoch from memory-mapped shards; ids range-checked per batch."""

import tracemalloc

import numpy as np
import pytest
import torch

from pipelines.shard_format import ShardError, write_shard
from training.data import ShardLoader, find_shards

ORDERS = ("shuffled", "llmc")


def _shards(tmp_path, sizes):
    d = tmp_path / "s"
    d.mkdir()
    for i, n in enumerate(sizes):
        # token value encodes (shard, position) so batches can be traced back
        write_shard(d / f"train_{i:06d}.bin", (np.arange(n) % 1000) + 1000 * i)
    return d


def test_find_shards_splits_train_and_val_and_names_bad_input(tmp_path, shard_dir):
    shards = find_shards([shard_dir])
    assert [p.name for p in shards.train] == ["train_000000.bin", "train_000001.bin"]
    assert [p.name for p in shards.val] == ["val_000000.bin"]
    explicit = find_shards([shard_dir / "train_000001.bin", shard_dir / "val_000000.bin"])
    assert [p.name for p in explicit.train] == ["train_000001.bin"] and len(explicit.val) == 1
    with pytest.raises(ValueError, match="no such shard directory"):
        find_shards([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no train_.*val_.*shards"):
        find_shards([tmp_path / "empty"])
    with pytest.raises(ValueError, match="no data given"):
        find_shards([])
    with pytest.raises(ValueError, match="no training shards"):
        find_shards([shard_dir / "val_000000.bin"])


def test_bad_shard_and_too_small_shards_are_reported(tmp_path):
    d = _shards(tmp_path, [10, 20])
    with pytest.raises(ShardError, match="no shard holds a full batch"):
        ShardLoader(sorted(d.glob("train_*")), batch=2, seq_len=16, order="llmc")
    (d / "train_000002.bin").write_bytes(b"garbage" * 300)
    with pytest.raises(ShardError, match="bad magic"):
        ShardLoader(sorted(d.glob("train_*")), batch=1, seq_len=4)


def test_batches_are_contiguous_shifted_and_deterministic(tmp_path):
    d = _shards(tmp_path, [500, 300, 400])
    files = sorted(d.glob("train_*"))
    a = ShardLoader(files, batch=2, seq_len=8, seed=5, order="llmc")
    b = ShardLoader(files, batch=2, seq_len=8, seed=5, order="llmc")
    for _ in range(200):  # several epochs
        (xa, ya), (xb, yb) = a.next_batch(), b.next_batch()
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert xa.shape == (2, 8) and xa.dtype == torch.int64
        assert torch.equal(xa.flatten()[1:], ya.flatten()[:-1])  # targets = inputs shifted by one
        flat = torch.cat([xa.flatten(), ya.flatten()[-1:]])
        assert torch.all(flat[1:] - flat[:-1] == 1)  # one contiguous run of one shard
    assert a.epoch >= 2
    other = ShardLoader(files, batch=2, seq_len=8, seed=6, order="llmc")
    orders = {tuple(a._epoch_order(e)) for e in range(6)} | {tuple(other._epoch_order(0))}
    assert len(orders) > 1  # the seed and the epoch change the shard order


@pytest.mark.parametrize("order", ORDERS)
def test_ranks_read_disjoint_slices_that_together_are_the_single_process_stream(tmp_path, order):
    """N ranks with accumulation A / N see the global batches one process with A sees."""
    d = _shards(tmp_path, [700, 900])
    files = sorted(d.glob("train_*"))
    single = ShardLoader(files, batch=2, seq_len=8, seed=1, order=order)
    ranks = [ShardLoader(files, batch=2, seq_len=8, seed=1, rank=r, world_size=3, order=order)
             for r in range(3)]
    for _ in range(40):
        got = [loader.next_batch()[0] for loader in ranks]
        want = [single.next_batch()[0] for _ in range(3)]
        for g, w in zip(got, want):
            assert torch.equal(g, w)
    assert ranks[0].state_dict() == ranks[2].state_dict() == single.state_dict()


@pytest.mark.parametrize("order", ORDERS)
def test_state_dict_resumes_the_exact_stream(tmp_path, order):
    d = _shards(tmp_path, [500, 300, 400])
    files = sorted(d.glob("train_*"))
    a = ShardLoader(files, batch=2, seq_len=8, seed=3, order=order)
    for _ in range(57):
        a.next_batch()
    b = ShardLoader(files, batch=2, seq_len=8, seed=3, order=order)
    b.load_state_dict(a.state_dict())
    for _ in range(100):  # across epoch boundaries
        (xa, ya), (xb, yb) = a.next_batch(), b.next_batch()
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert a.epoch >= 1 and a.state_dict() == b.state_dict()
    c = ShardLoader(files, batch=4, seq_len=8, seed=3, order=order)
    with pytest.raises(ValueError, match="chunks of 17 tokens"):
        c.load_state_dict(a.state_dict())
    other = ShardLoader(files, batch=2, seq_len=8, seed=3, order=[o for o in ORDERS if o != order][0])
    with pytest.raises(ValueError, match=f"saved in the '{order}' data order"):
        other.load_state_dict(a.state_dict())


def _window_starts(x: torch.Tensor) -> list[tuple[int, int]]:
    """(shard, token offset) of each sequence, from the tokens `_shards` writes."""
    return [(int(v) // 1000, int(v) % 1000) for v in x[:, 0]]


def test_shuffled_serves_every_window_exactly_once_per_epoch(tmp_path):
    sizes, seq = [500, 300, 401], 8
    files = sorted(_shards(tmp_path, sizes).glob("train_*"))
    windows = sorted((i, k * seq) for i, n in enumerate(sizes) for k in range((n - 1) // seq))
    loader = ShardLoader(files, batch=4, seq_len=seq, seed=7)  # 149 windows: batches straddle epochs
    assert loader.n_windows == len(windows) == 149
    stream = []
    for _ in range(len(windows)):  # 4 epochs' worth of windows
        x, y = loader.next_batch()
        assert x.shape == (4, seq) and torch.equal(x[:, 1:], y[:, :-1])
        assert torch.all(y[:, -1] == x[:, -1] + 1)  # targets run on in the same shard
        stream += _window_starts(x)
    epochs = [stream[e * len(windows) : (e + 1) * len(windows)] for e in range(4)]
    for epoch in epochs:
        assert sorted(epoch) == windows  # each window once, none skipped
    assert len({tuple(e) for e in epochs}) == 4  # a new permutation every epoch
    assert loader.epoch == 4 and loader.position == 0
    # one micro-batch mixes the corpus: its sequences are not one contiguous span
    assert len({s for s, _ in stream[:40]}) == len(sizes)


def test_shuffled_order_is_a_function_of_seed_and_epoch(tmp_path):
    files = sorted(_shards(tmp_path, [500, 300, 400]).glob("train_*"))
    a, b = (ShardLoader(files, batch=3, seq_len=8, seed=11) for _ in range(2))
    for _ in range(120):
        assert torch.equal(a.next_batch()[0], b.next_batch()[0])
    assert np.array_equal(a._epoch_windows(2), b._epoch_windows(2))
    c = ShardLoader(files, batch=3, seq_len=8, seed=12)
    assert not np.array_equal(a._epoch_windows(0), c._epoch_windows(0))
    torch.manual_seed(0), np.random.seed(0)  # no global RNG is consulted
    d = ShardLoader(files, batch=3, seq_len=8, seed=11)
    torch.manual_seed(1), np.random.seed(1)
    assert torch.equal(d.next_batch()[0], ShardLoader(files, batch=3, seq_len=8, seed=11).next_batch()[0])


@pytest.mark.parametrize("order", ORDERS)
def test_shards_stay_memory_mapped_and_the_corpus_is_never_copied(tmp_path, order):
    d = tmp_path / "big"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):  # 2 x 1M tokens = 4 MB of corpus
        write_shard(d / f"train_{i:06d}.bin", rng.integers(0, 50257, 1 << 20, dtype=np.uint16))
    files = sorted(d.glob("train_*"))
    tracemalloc.start()
    try:
        loader = ShardLoader(files, batch=8, seq_len=64, seed=0, order=order, vocab_size=50257)
        for _ in range(50):
            loader.next_batch()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert all(isinstance(t, np.memmap) for t in loader._tokens)
    # the permutation (4 bytes per window: 128 KiB here) and a few batches, not the 4 MB corpus
    assert peak < 600_000, peak


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("bad", [60000, 50300])  # 50300: a padding row of a 50304-row embedding
def test_a_bad_id_stops_at_the_batch_that_reads_it_naming_shard_and_offset(tmp_path, order, bad):
    d = tmp_path / "s"
    d.mkdir()
    write_shard(d / "train_000000.bin", np.arange(400) % 50257)
    tokens = np.arange(600) % 50257
    tokens[437] = bad
    write_shard(d / "train_000001.bin", tokens)
    files = sorted(d.glob("train_*"))
    # opening reads headers only: no scan of the corpus before the first step
    loader = ShardLoader(files, batch=2, seq_len=8, seed=0, order=order, vocab_size=50257)
    with pytest.raises(ShardError) as err:
        for _ in range(200):  # more than an epoch: the batch holding offset 437 comes
            loader.next_batch()
    msg = str(err.value)
    assert "train_000001.bin" in msg and f"token id {bad} at token offset 437" in msg, msg
    clean = ShardLoader(files, batch=2, seq_len=8, seed=0, order=order)  # no vocab_size: no check
    for _ in range(200):
        clean.next_batch()

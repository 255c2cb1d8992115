import numpy as np
import pytest
import torch

from pipelines.shard_format import ShardError, write_shard
from training.data import ShardLoader, find_shards


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


def test_ranks_read_disjoint_slices_that_together_are_the_single_process_stream(tmp_path):
    d = _shards(tmp_path, [700, 900])
    files = sorted(d.glob("train_*"))
    single = ShardLoader(files, batch=2, seq_len=8, seed=1)
    ranks = [ShardLoader(files, batch=2, seq_len=8, seed=1, rank=r, world_size=3) for r in range(3)]
    for _ in range(40):
        got = [loader.next_batch()[0] for loader in ranks]
        want = [single.next_batch()[0] for _ in range(3)]
        for g, w in zip(got, want):
            assert torch.equal(g, w)
    assert ranks[0].state_dict() == ranks[2].state_dict() == single.state_dict()


def test_state_dict_resumes_the_exact_stream(tmp_path):
    d = _shards(tmp_path, [500, 300, 400])
    files = sorted(d.glob("train_*"))
    a = ShardLoader(files, batch=2, seq_len=8, seed=3)
    for _ in range(57):
        a.next_batch()
    b = ShardLoader(files, batch=2, seq_len=8, seed=3)
    b.load_state_dict(a.state_dict())
    for _ in range(100):
        assert torch.equal(a.next_batch()[0], b.next_batch()[0])
    c = ShardLoader(files, batch=4, seq_len=8, seed=3)
    with pytest.raises(ValueError, match="chunks of 17 tokens"):
        c.load_state_dict(a.state_dict())

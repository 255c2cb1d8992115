"""Exact and MinHash dedup: per snapshot by default, across snapshots as an option, idempotent on
rerun; output byte-identical whatever the tasks and workers; a crashed run resumes by task."""

from __future__ import annotations

import random
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import dedup
from pipelines.dedup import DedupConfig, MinHasher, UnionFind, dedup_snapshot, merge_runs, normalise
from pipelines.filtering import KEPT_SCHEMA
from pipeline_helpers import prose


def _kept(path, texts, prefix, row_group_size=None):
    rows = [{"text": t, "id": f"{prefix}{i}", "source_file": "f.parquet", "source_row": i} for i, t in enumerate(texts)]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=KEPT_SCHEMA), path, row_group_size=row_group_size)
    return path


def _perturb(text: str, fraction: float, rng: random.Random) -> str:
    words = text.split()
    for j in rng.sample(range(len(words)), int(len(words) * fraction)):
        words[j] = f"w{rng.randrange(10**6)}"
    return " ".join(words)


def _corpus(n_base: int = 30, seed: int = 0) -> list[str]:
    """Originals, exact copies (case changed), near copies and copies of copies, shuffled."""
    rng = random.Random(seed)
    texts = [prose(12, seed=100 + i) for i in range(n_base)]
    out = list(texts)
    for t in texts[: n_base // 2]:
        out.append(t.upper())
        near = _perturb(t, 0.02, rng)
        out += [near, _perturb(near, 0.02, rng)]
    rng.shuffle(out)
    return out


def test_normalise_folds_case_spacing_punctuation_and_numbers():
    assert normalise("Hello,  WORLD!\n 2024") == normalise("hello world 1999") == "hello world 0"
    assert normalise("Café 3.14") == "cafe 0"


def test_minhash_finds_near_duplicates_only():
    h = MinHasher(DedupConfig())
    a = prose(60, seed=1)
    words = a.split()
    words[100] = "changed"
    b = " ".join(words)
    keys_a, keys_b, keys_c = h.bucket_keys(a), h.bucket_keys(b), h.bucket_keys(prose(60, seed=2))
    assert len(keys_a) == 14
    assert set(keys_a) & set(keys_b)
    assert not set(keys_a) & set(keys_c)
    assert h.bucket_keys("four words only here") == []  # fewer words than n: no 5-gram, no signature


def test_union_find_roots_at_the_smallest_member_through_chains():
    uf = UnionFind()
    for a, b in [(7, 9), (3, 9), (9, 12), (20, 21), (12, 5)]:
        uf.union(a, b)
    assert {x: uf.find(x) for x in (3, 5, 7, 9, 12, 20, 21)} == {3: 3, 5: 3, 7: 3, 9: 3, 12: 3, 20: 20, 21: 20}


def test_merge_runs_sorts_across_runs_and_chunks():
    rng = np.random.default_rng(0)
    runs = []
    for r in range(5):
        arr = np.empty(200, dedup._RUN)
        arr["k"] = rng.integers(0, 50, 200).astype(np.uint64)
        arr["i"] = np.arange(r * 1000, r * 1000 + 200)
        arr.sort(order=("k", "i"))
        runs.append(arr)
    sources = [iter([a[j: j + 17] for j in range(0, len(a), 17)]) for a in runs]
    blocks = list(merge_runs(sources))
    got = np.concatenate(blocks)
    want = np.concatenate(runs)
    want.sort(order=("k", "i"))
    assert len(blocks) > 1
    assert np.array_equal(np.sort(got["k"]), got["k"]) and np.array_equal(np.sort(got, order=("k", "i")), want)


def test_within_and_across_snapshots(tmp_path):
    base = [prose(30, seed=i) for i in range(6)]
    near = base[1].replace("The", "A", 1)
    cross = DedupConfig(cross_snapshot=True)
    s1 = _kept(tmp_path / "s1.parquet", [base[0], base[1], base[0].upper(), near, base[2]], "a")
    r1 = dedup_snapshot(s1, tmp_path / "d1", tmp_path / "index", cross, snapshot_key="s1")
    assert (r1.docs_in, r1.kept, r1.exact_duplicates, r1.near_duplicates) == (5, 3, 1, 1)
    dups = pq.read_table(r1.duplicates_path).to_pylist()
    assert [(d["id"], d["kind"], d["duplicate_of"]) for d in dups] == [("a2", "exact", "s1:a0"), ("a3", "near", "s1:a1")]

    s2 = _kept(tmp_path / "s2.parquet", [base[2], base[3], base[4]], "b")  # base[2] came with s1
    r2 = dedup_snapshot(s2, tmp_path / "d2", tmp_path / "index", cross, snapshot_key="s2")
    assert (r2.kept, r2.exact_duplicates, r2.scope) == (2, 1, "cross-snapshot")
    assert pq.read_table(r2.duplicates_path)["duplicate_of"].to_pylist() == ["s1:a4"]

    # Rerunning s1 after s2 exists: s1 is compared with nothing newer and never with itself.
    shutil.rmtree(tmp_path / "d1")
    again = dedup_snapshot(s1, tmp_path / "d1", tmp_path / "index", cross, snapshot_key="s1")
    assert (again.kept, again.kept_sha256) == (r1.kept, r1.kept_sha256)
    r2b = dedup_snapshot(s2, tmp_path / "d2", tmp_path / "index", cross, snapshot_key="s2")
    assert r2b.kept_sha256 == r2.kept_sha256
    assert dedup.registered_snapshots(tmp_path / "index") == ["s1", "s2"]

    # The default scope is the snapshot alone: base[2] stays, though s1 holds it.
    r2_alone = dedup_snapshot(s2, tmp_path / "d2-alone", tmp_path / "index", snapshot_key="s2")
    assert (r2_alone.kept, r2_alone.exact_duplicates, r2_alone.scope) == (3, 0, "snapshot")
    assert dedup_snapshot(s2, tmp_path / "d2-none", None).kept == 3  # no index needed on its own


def test_cross_snapshot_needs_an_index(tmp_path):
    s1 = _kept(tmp_path / "s1.parquet", ["one two three four five six"], "a")
    with pytest.raises(ValueError, match="index"):
        dedup_snapshot(s1, tmp_path / "d1", None, DedupConfig(cross_snapshot=True))


def test_output_is_byte_identical_whatever_the_tasks_workers_and_run_sizes(tmp_path):
    texts = _corpus()
    kept = _kept(tmp_path / "in" / "kept.parquet", texts, "d", row_group_size=7)
    earlier = _kept(tmp_path / "e" / "kept.parquet", texts[::4], "e", row_group_size=5)
    outputs = set()
    results = []
    settings = [dict(tasks=1), dict(tasks=4, run_rows=5, merge_rows=64),
                dict(tasks=3, workers=2, run_rows=9, batch_rows=4, merge_rows=100)]
    for scope in (False, True):
        for j, s in enumerate(settings):
            cfg = DedupConfig(cross_snapshot=scope, **s)
            index = tmp_path / f"index-{scope}-{j}"
            if scope:
                dedup_snapshot(earlier, tmp_path / f"e-{j}", index, DedupConfig(**s), snapshot_key="early")
            r = dedup_snapshot(kept, tmp_path / f"out-{scope}-{j}", index, cfg, snapshot_key="now")
            assert r.conserved and r.tasks == s["tasks"]
            out = tmp_path / f"out-{scope}-{j}"
            outputs.add((scope, (out / "kept.parquet").read_bytes(), (out / "duplicates.parquet").read_bytes()))
            results.append((scope, r.kept, r.exact_duplicates, r.near_duplicates))
    assert len(outputs) == 2, "one output per scope, whatever the cut"
    per_scope = {scope: counts for scope, *counts in results}
    alone, across = per_scope[False], per_scope[True]
    assert alone[1] == 15 and alone[2] >= 25, alone  # the case-changed copies; near copies and chains
    assert across[0] < alone[0]  # the earlier snapshot's quarter is gone too
    dups = pq.read_table(tmp_path / "out-True-0" / "duplicates.parquet").to_pylist()
    assert any(d["duplicate_of"].startswith("early:") for d in dups)
    assert all(d["duplicate_of"].split(":")[0] in ("early", "now") for d in dups)
    # Every kept one is the smallest index of its cluster: never a later copy kept instead.
    kept_ids = set(pq.read_table(tmp_path / "out-False-0" / "kept.parquet")["id"].to_pylist())
    for d in pq.read_table(tmp_path / "out-False-0" / "duplicates.parquet").to_pylist():
        root = d["duplicate_of"].split(":")[1]
        assert root in kept_ids and int(root[1:]) < int(d["id"][1:]), d


def test_a_crashed_run_redoes_only_the_unfinished_tasks(tmp_path, monkeypatch):
    kept = _kept(tmp_path / "in" / "kept.parquet", _corpus(), "d", row_group_size=10)
    cfg = DedupConfig(tasks=4)
    want = dedup_snapshot(kept, tmp_path / "clean", None, cfg)

    real = dedup._filter_task

    def crash_on_task_2(job):
        if job["task"] == 2:
            raise KeyboardInterrupt("killed")
        return real(job)

    monkeypatch.setattr(dedup, "_filter_task", crash_on_task_2)
    with pytest.raises(KeyboardInterrupt):
        dedup_snapshot(kept, tmp_path / "out", None, cfg)
    assert not (tmp_path / "out").exists()  # nothing visible under the final name
    work = next((tmp_path / ".out.work").iterdir())
    records = sorted(p.name for p in work.rglob("*.done.json"))
    assert "00001.done.json" in records and len([r for r in records if r.startswith("0000")]) == 4 + 2
    stamps = {p: p.stat().st_mtime_ns for p in work.rglob("*.done.json")}

    monkeypatch.setattr(dedup, "_filter_task", real)
    computed = []
    real_sig = dedup.MinHasher.signature
    monkeypatch.setattr(dedup.MinHasher, "signature", lambda self, t: computed.append(1) or real_sig(self, t))
    got = dedup_snapshot(kept, tmp_path / "out", None, cfg)
    assert not computed, "signature tasks that had finished were redone"
    assert all(p.stat().st_mtime_ns == m for p, m in stamps.items() if p.exists())
    assert got.kept_sha256 == want.kept_sha256
    assert (tmp_path / "out" / "duplicates.parquet").read_bytes() == (tmp_path / "clean" / "duplicates.parquet").read_bytes()
    assert not (tmp_path / ".out.work").exists()  # removed once the output is in place


def test_signature_runs_are_bounded_by_run_rows(tmp_path):
    kept = _kept(tmp_path / "in" / "kept.parquet", _corpus(), "d")
    work = tmp_path / "w"
    (work / "sig").mkdir(parents=True)
    cfg = DedupConfig(run_rows=8, batch_rows=4)
    plan = dedup.plan_tasks(kept, cfg)
    rec = dedup._signature_task({"work": str(work), "kept": str(kept), "cfg": cfg.__dict__, "task": 0, "slice": plan[0]})
    assert rec["docs"] == 75 and rec["runs"] == 10
    sizes = [len(np.load(p)) for p in (work / "sig" / "00000").glob("r*_exact.npy")]
    assert max(sizes) <= 8 and sum(sizes) == 75

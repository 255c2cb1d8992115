"""Helpers of the data pipeline tests: small snapshots cut from ../shared's docs sample (which is
documentation, not FineWeb) and hand-made documents."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / ".." / "shared" / "data" / "docs-sample"
SNAPSHOT_A = SAMPLES / "snapshot-2026-11-a"
SNAPSHOT_B = SAMPLES / "snapshot-2026-11-b"


def require_samples() -> None:
    if not SNAPSHOT_A.is_dir():
        pytest.skip(f"docs sample not found at {SAMPLES} (CI keeps ../shared beside the repo)")


def sample_rows(n: int, snapshot: Path = SNAPSHOT_A, step: int = 5) -> list[dict]:
    """Every `step`-th document of a sample snapshot, up to `n`: a mix of kept and rejected."""
    require_samples()
    rows: list[dict] = []
    for f in sorted(snapshot.glob("*.parquet")):
        rows += pq.read_table(f).to_pylist()
    return rows[::step][:n]


def write_parquet(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def doc(text, i: int = 0, **extra) -> dict:
    return {"text": text, "id": f"doc-{i}", "dump": "local-test", "url": f"https://example.org/{i}", **extra}


def prose(n_sentences: int = 40, seed: int = 0) -> str:
    """English-like text that passes every filter: varied sentences, one per line, each ending
    in a period, with enough stop words and no repeated n-grams to speak of."""
    import random

    rng = random.Random(seed)
    adjectives = "quiet bright ancient careful narrow golden distant simple heavy gentle curious hidden modern".split()
    nouns = ("river garden engineer library village teacher bridge lantern harbor mountain letter market "
             "window student captain orchard meadow painter kitchen island").split()
    verbs = "described repaired visited painted measured followed carried studied opened watched built found".split()
    preps = "before with near during for after without beside under behind".split()
    lines = []
    for _ in range(n_sentences):
        a, b = rng.sample(adjectives, 2)
        n1, n2, n3 = rng.sample(nouns, 3)
        c = rng.choice(adjectives)
        lines.append(f"The {a} {n1} {rng.choice(verbs)} {rng.randint(2, 999)} {n2}s of {b} {n3}s "
                     f"{rng.choice(preps)} the {c} {rng.choice(nouns)} and {rng.choice(nouns)}.")
    return "\n".join(lines)

"""FineWeb streamed through `datasets.load_dataset(..., streaming=True)` from the local hub server
(tests/hub_server.py): documents in the pipeline's schema, read by HTTP ranges with nothing in
the hub cache, pinned to a commit sha and resumable from a saved position after the hub moved on;
and a snapshot's kept documents as a `datasets.Dataset`.

The streams run in a child process: `datasets` reads HF_ENDPOINT when it is imported, and in a
test session something may have imported it already."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[2]
STREAM = """
import json, sys
from pipelines.hub_stream import StreamPosition, stream_documents
config, position, batch_rows, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
position = StreamPosition.from_json(position) if position else None
for batch, pos in stream_documents(config, position=position, batch_rows=batch_rows, limit=limit):
    print(json.dumps({"ids": [d["id"] for d in batch], "rows": [d["source_row"] for d in batch],
                      "source": batch[0]["source_file"], "columns": sorted(batch[0]), "position": pos.to_json()}))
"""


def _stream(config: str, position: str = "", batch_rows: int = 10, limit: int = 25) -> list[dict]:
    proc = subprocess.run([sys.executable, "-c", STREAM, config, position, str(batch_rows), str(limit)],
                          cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [json.loads(line) for line in proc.stdout.splitlines()]


def _ids(hub, rev: str, prefix: str = "sample/10BT/") -> list[str]:
    import io

    files = hub.repo.at(rev).files
    return [i for p in sorted(files) if p.startswith(prefix)
            for i in pq.read_table(io.BytesIO(files[p])).column("id").to_pylist()]


@pytest.mark.slow
def test_streamed_fineweb_config_is_pinned_and_resumes_where_it_stopped(hub, tmp_path):
    from hub_server import fineweb_shaped_parquet, sample_rows

    from pipelines.sources import SCHEMA

    first = hub.repo.at("main").sha
    expected = _ids(hub, first)
    batches = _stream("sample-10BT")
    assert [len(b["ids"]) for b in batches] == [10, 10, 5]
    assert [i for b in batches for i in b["ids"]] == expected[:25]
    assert [r for b in batches for r in b["rows"]] == list(range(25))
    assert batches[0]["source"] == f"sample-10BT@{first[:12]}" and batches[0]["columns"] == sorted(SCHEMA.names)
    # Ranges only, nothing in the hub cache: the stream never holds a whole file.
    reads = hub.requests("GET", contains=".parquet")
    assert reads and all(r["range"] and r["status"] == 206 for r in reads)
    assert not list((tmp_path / "hf-home" / "hub").rglob("*.parquet"))

    # The hub moves on; a saved position still resumes the stream it came from.
    hub.repo.commit({"sample/10BT/000_00000.parquet": fineweb_shaped_parquet(sample_rows(30, 400))})
    saved = batches[0]["position"]
    assert json.loads(saved)["revision"] == first and json.loads(saved)["documents"] == 10
    resumed = _stream("sample-10BT", saved, batch_rows=8, limit=45)
    assert [i for b in resumed for i in b["ids"]] == expected[10:45]  # across the file boundary at 40
    assert [r for b in resumed for r in b["rows"]] == list(range(10, 45))
    fresh = _stream("sample-10BT", limit=3)
    second = hub.repo.at("main").sha
    assert fresh[0]["ids"] == _ids(hub, second)[:3] and fresh[0]["source"] == f"sample-10BT@{second[:12]}"

    # A dump is streamed from its files.
    dump = _stream("CC-MAIN-2024-10", limit=100)
    assert [i for b in dump for i in b["ids"]] == _ids(hub, second, "data/CC-MAIN-2024-10/")


def test_kept_documents_open_as_a_dataset(tmp_path):
    from hub_server import fineweb_shaped_parquet, sample_rows

    from pipelines.hub_stream import kept_documents
    from pipelines.sources import SourceError

    kept = tmp_path / "ws" / "data" / "snap-1" / "dedup" / "kept.parquet"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(fineweb_shaped_parquet(sample_rows(7)))
    ds = kept_documents("snap-1", workspace=tmp_path / "ws")
    assert len(ds) == 7 and ds[0]["id"] == sample_rows(1)[0]["id"] and "text" in ds.column_names
    with pytest.raises(SourceError, match="has its filtered stage run"):
        kept_documents("snap-1", stage="filtered", workspace=tmp_path / "ws")

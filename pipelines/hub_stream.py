"""FineWeb through `datasets`: streamed from the hub instead of downloaded whole, and a snapshot's
kept documents opened as a `datasets.Dataset` for inspection.

    from pipelines.hub_stream import stream_documents, kept_documents
    for batch, position in stream_documents("sample-10BT", limit=1000):
        ...                       # batch: documents in the pipeline's schema
        saved = position.to_json()  # resume later: stream_documents(..., position=StreamPosition.from_json(saved))
    kept_documents("sample-10BT@0123456789ab")  # Dataset of the documents the pipeline kept

Streaming reads the parquet files by HTTP ranges through `load_dataset(..., streaming=True)`:
memory stays at a few row groups, whatever the file's size, nothing lands in the hub cache, and the first documents come
before a multi-GB file would have finished downloading. The revision is resolved once to a commit
sha and pinned, so a position (the sha, the documents read, `IterableDataset.state_dict()`)
resumes the same stream even after the hub moved on. Whole-file downloads (pipelines.sources.
hub_snapshot) remain what the pipeline's snapshots use: they verify each file's sha256, which a
stream of ranges cannot.

`datasets` reads HF_ENDPOINT once, when it is imported; set it before starting Python to use a
mirror.
"""

from __future__ import annotations

import gc
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from pipelines.sources import FINEWEB_SCHEMA, HUB_REPO, SourceError, _hub_endpoint, hub_pattern, hub_revision


@dataclass(frozen=True)
class StreamPosition:
    """Where a stream stopped: its pinned commit sha, documents read, and `datasets`' own state."""

    config: str
    revision: str
    documents: int = 0
    state: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"config": self.config, "revision": self.revision, "documents": self.documents,
                           "state": self.state})

    @classmethod
    def from_json(cls, text: str) -> "StreamPosition":
        d = json.loads(text)
        return cls(d["config"], d["revision"], int(d["documents"]), d.get("state") or {})


def _check_endpoint() -> None:
    import datasets

    wanted = (_hub_endpoint() or "https://huggingface.co").rstrip("/")
    if datasets.config.HF_ENDPOINT.rstrip("/") != wanted:
        raise SourceError(
            f"datasets was imported with HF_ENDPOINT={datasets.config.HF_ENDPOINT}, but it is now {wanted}: "
            "set HF_ENDPOINT before Python starts"
        )


def open_stream(config: str = "sample-10BT", revision: str | None = None, repo: str = HUB_REPO,
                position: StreamPosition | None = None):
    """(IterableDataset of `config` at a pinned commit sha, that sha), resumed at `position`."""
    import datasets

    _check_endpoint()
    if position is not None:
        if position.config != config or (revision is not None and revision != position.revision):
            raise SourceError(f"position of {position.config}@{position.revision[:12]} does not fit "
                              f"{config}@{revision or 'its revision'}")
        sha = position.revision
    else:
        sha = hub_revision(repo, revision)
    # A dump (CC-MAIN-...) is not a named config of FineWeb's README: read its files directly.
    kwargs = ({"data_files": {"train": hub_pattern(config)}} if config.startswith("CC-MAIN-") else {"name": config})
    ds = datasets.load_dataset(repo, split="train", streaming=True, revision=sha, **kwargs)
    if position is not None and position.state:
        ds.load_state_dict(position.state)
    return ds, sha


def stream_documents(config: str = "sample-10BT", revision: str | None = None, repo: str = HUB_REPO,
                     position: StreamPosition | None = None, batch_rows: int = 256,
                     limit: int | None = None) -> Iterator[tuple[list[dict], StreamPosition]]:
    """Batches of at most `batch_rows` documents in the pipeline's schema (`source_file` is
    `config@sha`, `source_row` the document's place in the stream), each with the position after
    it; at most `limit` documents in all, counted from the start of the stream."""
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    ds, sha = open_stream(config, revision, repo, position)
    done = position.documents if position is not None else 0
    source = f"{config}@{sha[:12]}"
    batch: list[dict] = []
    if limit is not None and done >= limit:
        return
    rows = iter(ds)
    try:
        for row in rows:
            batch.append({**{k: row.get(k) for k in FINEWEB_SCHEMA.names},
                          "source_file": source, "source_row": done, "input_error": None})
            done += 1
            last = limit is not None and done >= limit
            if len(batch) == batch_rows or last:
                yield batch, StreamPosition(config, sha, done, ds.state_dict())
                batch = []
            if last:
                return
        if batch:
            yield batch, StreamPosition(config, sha, done, ds.state_dict())
    finally:
        # A stream left mid-file keeps pyarrow's scanner threads alive; if they are still there
        # when the interpreter tears Arrow down, the process aborts at exit ("terminate called
        # without an active exception"). Closing the row iterator and collecting now joins them
        # while Arrow is alive.
        close = getattr(rows, "close", None)
        if close is not None:
            close()
        del rows
        gc.collect()


def kept_documents(snapshot_key: str, stage: str = "dedup", workspace: str | os.PathLike | None = None):
    """The documents a stage of the pipeline kept for a snapshot ("filtered": after the quality
    filters, "dedup": after deduplication too) as a `datasets.Dataset` (memory-mapped)."""
    import datasets

    from pipelines.orchestration.paths import Workspace

    if stage not in ("filtered", "dedup"):
        raise ValueError(f"stage must be 'filtered' or 'dedup', got {stage!r}")
    ws = Workspace(Path(workspace)) if workspace is not None else Workspace.default()
    path = ws.snapshot_dir(snapshot_key) / stage / "kept.parquet"
    if not path.is_file():
        raise SourceError(f"{path}: no kept documents of snapshot {snapshot_key} (has its {stage} stage run?)")
    # datasets' Arrow copy beside the stage's output, not in the user's home cache.
    return datasets.Dataset.from_parquet(str(path), split="train", cache_dir=str(path.parent / ".datasets-cache"))

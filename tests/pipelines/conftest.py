"""Fixtures of the data pipeline tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline_helpers import sample_rows, write_parquet


@pytest.fixture
def small_snapshot_dir(tmp_path) -> Path:
    """A two-file snapshot of 60 sample documents."""
    rows = sample_rows(60)
    d = tmp_path / "inbox" / "snap-small"
    write_parquet(d / "part-0.parquet", rows[:30])
    write_parquet(d / "part-1.parquet", rows[30:])
    return d

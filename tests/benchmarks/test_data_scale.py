"""benchmarks/data_scale.py at a tiny size: it runs the whole pipeline in a child process and
prints every figure the issue asks for, with conservation held and the same output whatever
the workers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_a_tiny_run_prints_every_field_and_conservation_holds(tmp_path):
    if not (REPO / ".." / "shared" / "data" / "docs-sample").is_dir():
        pytest.skip("docs sample not found beside the repo")
    proc = subprocess.run([sys.executable, "benchmarks/data_scale.py", "--sizes", "150", "300", "--workers", "1", "2",
                           "--tmp", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["conservation_ok"] and out["output_identical_across_workers_and_executors"] == {"150": True, "300": True}
    assert [(r["docs"], r["workers"], r["executor"]) for r in out["rows"]] == \
        [(150, 1, "local"), (150, 2, "local"), (300, 1, "local"), (300, 2, "local")]
    for r in out["rows"]:
        assert r["conservation"]["documents_in"] == r["docs"] and r["peak_rss_mb"] > 50 and r["seconds"] > 0
        assert set(r["stages"]) == {"filter", "dedup", "tokenize", "stats"}
        assert all(s["seconds"] > 0 and s["docs_per_s"] > 0 for s in r["stages"].values())
        assert r["stages"]["dedup"]["docs"] == r["conservation"]["kept"] + r["conservation"]["duplicates"]
        assert r["stages"]["tokenize"]["docs"] == r["conservation"]["kept"] > 0
    ratios = out["ratios"]
    assert set(ratios["memory"]) == set(ratios["time"]) == set(ratios["dedup_per_core"]) == \
        {"local, workers=1", "local, workers=2"}
    assert set(ratios["two_workers_vs_one"]) == {"local, 150 docs", "local, 300 docs"}
    assert all("speedup" in v and ">=1.7x" in v for v in ratios["two_workers_vs_one"].values())
    ext = out["extrapolation_sample_10bt"]
    assert ext["documents"] == 14_900_000 and ext["cores"] == 32 and set(ext["stages"]) == set(out["rows"][0]["stages"])
    assert ext["total_hours"] == pytest.approx(sum(s["hours"] for s in ext["stages"].values()), abs=0.05)
    assert not list(tmp_path.iterdir())  # the scratch space is cleaned up

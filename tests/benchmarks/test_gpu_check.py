"""benchmarks/gpu_check.sh must never rot between the rare runs on a GPU: its dry run takes the
same steps on the CPU with a tiny model."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_dry_run_reports_every_step():
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    report = json.loads(proc.stdout)
    assert report["ok"] and report["gpu_check"].startswith("dry-run")
    counts = report["tests"]["counts"]
    assert sum(counts.values()) == 5 and not counts.get("failed")  # every cuda test collected
    variants = report["train"]["result"]["bf16"]["variants"]
    assert set(variants) == {"hf_compiled", "ours_compiled"}
    assert all(v["tokens_per_s"] > 0 and 0 < v["mfu"] for v in variants.values())
    assert "ratio_ours_compiled_vs_hf_compiled" in report["summary"]
    assert report["summary"]["generate_tiny_same_tokens"] is True

"""Dedup alone at growing corpus sizes: wall time, documents per second and peak RSS summed over
the whole process tree (the dedup runs in a child process, its pool's workers under it), with 1
and 2 workers.

The corpus is FineWeb-like in shape (it is not FineWeb), benchmarks/corpus.py's `dedup` flavour:
~3000-character pages cut from the docs sample in ../shared, each document a page with a third of
its words replaced (so documents are distinct, as most web pages are), plus 10% near copies of
earlier documents (2% of the words changed) and 3% exact copies (case changed).

Besides wall time it prints documents per CPU-second of the whole tree, the per-core rate that
still means something when other work shares the machine's cores.

Targets (issue 13): memory flat (the largest size at most 1.25x the smallest, at most 1.5 GiB),
docs/s at the largest size at least 0.9x the smallest, at least 2,000 docs/s per core. The old
single-process implementation measured ~810 docs/s and 311/422/603 MB at 20k/40k/80k documents
on the same kind of corpus; it kept every hash in Python dicts and is gone, so those figures are
printed beside ours rather than rerun.

    .venv/bin/python benchmarks/dedup_scale.py                      # 20k, 80k, 320k; workers 1 and 2
    .venv/bin/python benchmarks/dedup_scale.py --sizes 20000 80000 160000 --workers 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from corpus import REPO, write_corpus
from process_tree import run_measured

OLD = {"docs_per_s": 810, "peak_rss_mb": {"20000": 311, "40000": 422, "80000": 603}}

RUN = """
import json, sys, time
from pipelines.dedup import DedupConfig, dedup_snapshot
t0 = time.perf_counter()
r = dedup_snapshot(sys.argv[1], sys.argv[2], None, DedupConfig(workers=int(sys.argv[3])))
print(json.dumps({"seconds": time.perf_counter() - t0, **r.to_dict()}))
"""


def run_dedup(kept: Path, out: Path, workers: int) -> dict:
    code, stdout, peak, cpu = run_measured([sys.executable, "-c", RUN, str(kept), str(out), str(workers)], REPO)
    if code != 0:
        sys.exit(f"dedup failed (exit {code})")
    return {**json.loads(stdout.strip().splitlines()[-1]), "peak_rss_mb": round(peak / 2**20), "cpu_seconds": cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[20_000, 80_000, 320_000])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--tmp", default=None, help="scratch directory (default: a new one under $TMPDIR)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(dir=args.tmp))
    rows = []
    try:
        for n in args.sizes:
            kept = tmp / f"kept-{n}.parquet"
            t0 = time.perf_counter()
            write_corpus(kept, n)
            print(f"corpus {n}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
            for w in args.workers:
                out = tmp / f"dedup-{n}-{w}"
                r = run_dedup(kept, out, w)
                row = {"docs": n, "workers": w, "seconds": round(r["seconds"], 1),
                       "docs_per_s": round(n / r["seconds"]), "docs_per_s_per_core": round(n / r["seconds"] / w),
                       "cpu_seconds": round(r["cpu_seconds"], 1), "docs_per_cpu_s": round(n / r["cpu_seconds"]),
                       "peak_rss_mb": r["peak_rss_mb"], "kept": r["kept"], "exact": r["exact_duplicates"],
                       "near": r["near_duplicates"], "tasks": r["tasks"], "kept_sha256": r["kept_sha256"][:16]}
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
                shutil.rmtree(out)
            kept.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    small, large = min(args.sizes), max(args.sizes)
    checks = {}
    for w in args.workers:
        a = next(r for r in rows if r["docs"] == small and r["workers"] == w)
        b = next(r for r in rows if r["docs"] == large and r["workers"] == w)
        checks[f"workers={w}"] = {
            "memory_ratio_largest_to_smallest": round(b["peak_rss_mb"] / a["peak_rss_mb"], 2),
            "memory_flat (<=1.25x, <=1536 MB)": b["peak_rss_mb"] <= 1.25 * a["peak_rss_mb"]
            and max(r["peak_rss_mb"] for r in rows if r["workers"] == w) <= 1536,
            "speed_ratio_largest_to_smallest": round(b["docs_per_s"] / a["docs_per_s"], 2),
            "time_linear (>=0.9x)": b["docs_per_s"] >= 0.9 * a["docs_per_s"],
            ">=2000 docs/s per core (wall)": min(r["docs_per_s_per_core"] for r in rows if r["workers"] == w) >= 2000,
            ">=2000 docs per CPU-second": min(r["docs_per_cpu_s"] for r in rows if r["workers"] == w) >= 2000,
        }
    same = {n: len({r["kept_sha256"] for r in rows if r["docs"] == n}) == 1 for n in args.sizes}
    print(json.dumps({"cpus": os.cpu_count(), "load_average": os.getloadavg(), "rows": rows, "checks": checks,
                      "output_identical_across_workers": same, "old_single_process": OLD}, indent=2))


if __name__ == "__main__":
    main()

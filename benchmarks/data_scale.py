"""The whole data pipeline (filter, dedup, tokenize, statistics: `run_pipeline`, the chain the CLI
and Dagster run) at growing corpus sizes, with 1 and 2 workers, on the local executor and on Ray:
wall time, documents per second per stage, peak RSS summed over the whole process tree (the run
is a child process; its pool workers, or the Ray cluster it starts with `num_cpus` = workers,
are under it), and the ratios issue 13 sets targets for. Prints one JSON object.

The corpus is FineWeb-like in shape (it is not FineWeb): benchmarks/corpus.py's `pipeline`
flavour, ~3000-character pages cut from the docs sample in ../shared with a third of their words
replaced, 10% near copies and 3% exact copies, in FineWeb's columns.

Targets (issue 13): memory flat (the largest size at most 1.25x the smallest, at most 1.5 GiB at
any size), docs/s at the largest size at least 0.9x the smallest, two workers at least 1.7x one
end to end, dedup at least 2,000 docs/s per core. The extrapolation to FineWeb's sample-10BT
(14.9M documents) on a 32-core node takes each stage's documents per second per worker at the
largest size and the most workers measured, times the 1 -> 2 worker scaling measured (when both
were run), as if it held to 32 workers: the tokenize and statistics merges run in one process,
so those stages scale less than that says. Say which CPU the figures came from
(`lscpu | grep -o 'amx_bf16\\|avx512_bf16'`) and whether the machine was quiet.

    .venv/bin/python benchmarks/data_scale.py                                   # 20k, 80k, 320k
    .venv/bin/python benchmarks/data_scale.py --sizes 2000 --workers 1 2 --executor local ray
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

SAMPLE_10BT_DOCS = 14_900_000
TARGET_CORES = 32
STAGES = ("filter", "dedup", "tokenize", "stats")

# The child: one snapshot through run_pipeline; a stage's time runs from its progress bar's
# opening to its closing (the chain opens one per stage but statistics, which takes the rest).
RUN = """
import json, sys, time
from pathlib import Path
from pipelines.dedup import DedupConfig
from pipelines.filtering import FilterStageConfig
from pipelines.run import PipelineConfig, run_pipeline
from pipelines.sources import local_snapshot
from pipelines.stats import StatsConfig
from pipelines.tokenize import TokenizeConfig

snap_dir, root, workers, executor = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if executor == "ray":
    import ray
    ray.init(num_cpus=workers, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
cfg = PipelineConfig(filter=FilterStageConfig(workers=workers), dedup=DedupConfig(workers=workers),
                     tokenize=TokenizeConfig(workers=workers), stats=StatsConfig(workers=workers)).on_executor(executor)
seconds = {}

class Timer:
    def __init__(self, name, total=None):
        self.name, self.t0 = name, time.perf_counter()
    def update(self, n=1):
        pass
    def close(self):
        seconds[self.name] = time.perf_counter() - self.t0

t0 = time.perf_counter()
r = run_pipeline(local_snapshot(snap_dir), root, cfg, progress_factory=Timer)
total = time.perf_counter() - t0
seconds["stats"] = total - sum(seconds.values())
print(json.dumps({"total_seconds": total, "seconds": seconds, "result": r.to_dict()}))
"""


def run_once(snap: Path, root: Path, workers: int, executor: str) -> dict:
    code, stdout, peak, cpu = run_measured([sys.executable, "-c", RUN, str(snap), str(root), str(workers), executor], REPO)
    if code != 0:
        sys.exit(f"pipeline failed (exit {code}) at {snap} with {workers} workers on {executor}")
    out = json.loads(stdout.strip().splitlines()[-1])
    r = out["result"]
    docs = {"filter": r["filter"]["docs_in"], "dedup": r["dedup"]["docs_in"], "tokenize": r["tokenize"]["docs"],
            "stats": r["filter"]["docs_in"]}
    stages = {s: {"docs": docs[s], "seconds": round(out["seconds"][s], 2),
                  "docs_per_s": round(docs[s] / out["seconds"][s]) if out["seconds"][s] > 0 else None}
              for s in STAGES}
    n = r["filter"]["docs_in"]
    return {"docs": n, "workers": workers, "executor": executor, "seconds": round(out["total_seconds"], 1),
            "docs_per_s": round(n / out["total_seconds"]), "cpu_seconds": round(cpu, 1),
            "docs_per_cpu_s": round(n / cpu) if cpu else None, "peak_rss_mb": round(peak / 2**20),
            "stages": stages, "dedup_docs_per_s_per_core": round(stages["dedup"]["docs_per_s"] / workers),
            "conservation_ok": r["conservation"]["ok"], "conservation": r["conservation"],
            "content_hash": r["tokenize"]["content_hash"][:16], "kept_sha256": r["dedup"]["kept_sha256"][:16],
            "stats_tables": sorted(r["stats"]["tables"])}


def _row(rows, **key):
    return next((r for r in rows if all(r[k] == v for k, v in key.items())), None)


def ratios(rows: list[dict], sizes: list[int], workers: list[int], executors: list[str]) -> dict:
    small, large = min(sizes), max(sizes)
    out: dict = {"memory": {}, "time": {}, "two_workers_vs_one": {}, "dedup_per_core": {}, "ray_vs_local": {}}
    for ex in executors:
        for w in workers:
            a, b = _row(rows, docs=small, workers=w, executor=ex), _row(rows, docs=large, workers=w, executor=ex)
            key = f"{ex}, workers={w}"
            out["memory"][key] = {
                "largest_to_smallest": round(b["peak_rss_mb"] / a["peak_rss_mb"], 2),
                "peak_mb": max(r["peak_rss_mb"] for r in rows if (r["workers"], r["executor"]) == (w, ex)),
                "flat (<=1.25x, <=1536 MB)": b["peak_rss_mb"] <= 1.25 * a["peak_rss_mb"] and
                max(r["peak_rss_mb"] for r in rows if (r["workers"], r["executor"]) == (w, ex)) <= 1536}
            out["time"][key] = {"docs_per_s_largest_to_smallest": round(b["docs_per_s"] / a["docs_per_s"], 2),
                                "linear (>=0.9x)": b["docs_per_s"] >= 0.9 * a["docs_per_s"]}
            per_core = min(r["dedup_docs_per_s_per_core"] for r in rows if (r["workers"], r["executor"]) == (w, ex))
            out["dedup_per_core"][key] = {"lowest_docs_per_s_per_core": per_core, ">=2000": per_core >= 2000}
        if 1 in workers and 2 in workers:
            for n in sizes:
                one, two = _row(rows, docs=n, workers=1, executor=ex), _row(rows, docs=n, workers=2, executor=ex)
                out["two_workers_vs_one"][f"{ex}, {n} docs"] = {
                    "speedup": round(two["docs_per_s"] / one["docs_per_s"], 2),
                    ">=1.7x": two["docs_per_s"] >= 1.7 * one["docs_per_s"]}
    if "local" in executors and "ray" in executors:
        for n in sizes:
            for w in workers:
                loc, ray = _row(rows, docs=n, workers=w, executor="local"), _row(rows, docs=n, workers=w, executor="ray")
                out["ray_vs_local"][f"{n} docs, workers={w}"] = round(ray["docs_per_s"] / loc["docs_per_s"], 2)
    return out


def extrapolate(rows: list[dict], sizes: list[int], workers: list[int]) -> dict:
    """Hours for sample-10BT on TARGET_CORES workers, stage by stage (see the module docstring)."""
    ex = "local" if any(r["executor"] == "local" for r in rows) else rows[0]["executor"]
    large, most = max(sizes), max(workers)
    base = _row(rows, docs=large, workers=most, executor=ex)
    one = _row(rows, docs=large, workers=1, executor=ex)
    stages = {}
    for s in STAGES:
        st = base["stages"][s]
        per_worker = st["docs"] / st["seconds"] / most if st["seconds"] > 0 else None
        # scaling per added worker, as measured from 1 to `most` (1.0 when only one count was run)
        eff = 1.0
        if one is not None and most > 1 and one["stages"][s]["seconds"] > 0:
            eff = min(1.0, (one["stages"][s]["seconds"] / st["seconds"]) / most)
        docs = SAMPLE_10BT_DOCS * st["docs"] / base["docs"]
        hours = docs / (per_worker * TARGET_CORES * eff) / 3600 if per_worker else None
        stages[s] = {"docs": round(docs), "docs_per_s_per_worker": round(per_worker) if per_worker else None,
                     "scaling_efficiency": round(eff, 2), "hours": round(hours, 2) if hours else None}
    return {"documents": SAMPLE_10BT_DOCS, "cores": TARGET_CORES, "from": f"{large} docs, {most} workers, {ex}",
            "stages": stages, "total_hours": round(sum(v["hours"] or 0 for v in stages.values()), 2),
            "assumes": "the measured per-worker rate and 1->N scaling hold to 32 workers; the tokenize and "
                       "statistics merges are one process each, so they scale less"}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[20_000, 80_000, 320_000])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--executor", nargs="+", choices=["local", "ray"], default=["local"])
    ap.add_argument("--tmp", default=None, help="scratch directory (default: a new one under $TMPDIR)")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(dir=args.tmp))
    rows = []
    try:
        for n in args.sizes:
            snap = tmp / f"snapshot-{n}"
            snap.mkdir()
            t0 = time.perf_counter()
            write_corpus(snap / "part-00000.parquet", n, flavour="pipeline")
            print(f"corpus {n}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
            for ex in args.executor:
                for w in args.workers:
                    root = tmp / f"data-{n}-{ex}-{w}"
                    row = run_once(snap, root, w, ex)
                    rows.append(row)
                    print(json.dumps({k: row[k] for k in ("docs", "workers", "executor", "seconds", "docs_per_s",
                                                          "peak_rss_mb")}), file=sys.stderr, flush=True)
                    shutil.rmtree(root)
            shutil.rmtree(snap)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    same = {str(n): len({(r["content_hash"], r["kept_sha256"]) for r in rows if r["docs"] == n}) == 1
            for n in args.sizes}
    print(json.dumps({"cpus": os.cpu_count(), "load_average": os.getloadavg(), "rows": rows,
                      "ratios": ratios(rows, args.sizes, args.workers, args.executor),
                      "extrapolation_sample_10bt": extrapolate(rows, args.sizes, args.workers),
                      "output_identical_across_workers_and_executors": same,
                      "conservation_ok": all(r["conservation_ok"] for r in rows)}, indent=2))


if __name__ == "__main__":
    main()

"""Data pipeline throughput against its peers, measured side by side in one run; prints JSON.

- filters: our FineWeb filters vs datatrove 0.10.1's (same thresholds, spaCy word tokenizer) on
  the same documents: documents/s per filter and for the whole chain, and keep/reject agreement;
- tokenization: `tokenize_documents` (read parquet, encode in worker processes, write shards and
  manifest) vs bare tiktoken `encode_ordinary_batch` on the same texts already in memory, in one
  process and in two; plus the peak memory (RSS of the whole process tree) while tokenizing an
  input `--repeat` times the samples.

    .venv/bin/python benchmarks/data_pipeline.py                     # both docs-sample snapshots
    .venv/bin/python benchmarks/data_pipeline.py --filter-docs 300 --repeat 10
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines import filters as ours  # noqa: E402

SAMPLES = ROOT / ".." / "shared" / "data" / "docs-sample"


def load_docs(limit: int | None) -> list[dict]:
    docs = []
    for snap in sorted(SAMPLES.iterdir()):
        for f in sorted(snap.glob("*.parquet")):
            for row in pq.read_table(f, columns=["id", "text"]).to_pylist():
                docs.append({**row, "source_file": f"{snap.name}/{f.name}"})
    if limit:
        step = max(1, len(docs) // limit)  # spread over both snapshots
        docs = docs[::step][:limit]
    return docs


def rate(n: int, seconds: float) -> float:
    return round(n / seconds, 2) if seconds > 0 else float("inf")


# ---------------------------------------------------------------------------------------------
# Filters


def bench_filters(docs: list[dict]) -> dict:
    from datatrove.data import Document
    from datatrove.pipeline.filters import C4QualityFilter, FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter
    from datatrove.utils.text import split_into_words

    split_into_words("warm up spaCy")  # load the tokenizer outside the timings
    theirs = {
        "gopher_repetition": GopherRepetitionFilter(),
        "gopher_quality": GopherQualityFilter(),
        "c4_quality": C4QualityFilter(filter_no_terminal_punct=False),  # FineWeb's setting
        "fineweb_quality": FineWebQualityFilter(),
    }
    mine = {
        "gopher_repetition": lambda t: ours.gopher_repetition(t),
        "gopher_quality": lambda t: ours.gopher_quality(t),
        "c4_quality": lambda t: ours.c4_quality(t)[0],
        "fineweb_quality": lambda t: ours.fineweb_quality(t),
    }
    from pipelines import words

    out: dict = {"documents": len(docs), "per_filter": {}}
    texts = [d["text"] for d in docs]
    for name in theirs:
        words._CACHE.clear()  # every timing starts with our word-split cache empty
        t0 = time.perf_counter()
        dt_keep = []
        for d in docs:
            r = theirs[name].filter(Document(text=d["text"], id=d["id"]))
            dt_keep.append(r is True or (isinstance(r, tuple) and r[0]))
        t_dt = time.perf_counter() - t0
        t0 = time.perf_counter()
        our_keep = [mine[name](t).keep for t in texts]  # each filter splits words itself here
        t_ours = time.perf_counter() - t0
        agree = sum(a == b for a, b in zip(dt_keep, our_keep))
        out["per_filter"][name] = {
            "ours_docs_per_s": rate(len(docs), t_ours),
            "datatrove_docs_per_s": rate(len(docs), t_dt),
            "speedup": round(t_dt / t_ours, 2),
            "agreement": round(agree / len(docs), 4),
            "disagreements": len(docs) - agree,
        }

    # The whole chain, in FineWeb's order: a document stops at its first rejection and the later
    # filters see C4's shortened text, as in a datatrove pipeline.
    chain = list(theirs.values())
    t0 = time.perf_counter()
    dt_kept = 0
    for d in docs:
        doc = Document(text=d["text"], id=d["id"])
        for f in chain:
            r = f.filter(doc)
            if not (r is True or (isinstance(r, tuple) and r[0])):
                break
        else:
            dt_kept += 1
    t_dt = time.perf_counter() - t0
    cfg = ours.FilterConfig()
    words._CACHE.clear()
    t0 = time.perf_counter()
    our_kept = sum(ours.apply_filters(d, cfg).keep for d in docs)
    t_ours = time.perf_counter() - t0

    from pipelines.filtering import _filter_batch
    from pipelines.parallel import ordered_map, process_pool

    batches = [(docs[i : i + 16], cfg.to_dict()) for i in range(0, len(docs), 16)]
    with process_pool(2) as pool:
        list(pool.map(_filter_batch, [([], cfg.to_dict())] * 2))  # start the workers before timing
        t0 = time.perf_counter()
        two = sum(k for res in ordered_map(_filter_batch, batches, 2, pool=pool) for k, *_ in res)
        t_two = time.perf_counter() - t0
    out["all_filters"] = {
        "datatrove_docs_per_s": rate(len(docs), t_dt),
        "ours_docs_per_s_1_process": rate(len(docs), t_ours),
        "ours_docs_per_s_2_processes": rate(len(docs), t_two),
        "speedup_1_process_vs_datatrove_1_process": round(t_dt / t_ours, 2),
        "speedup_2_processes_vs_datatrove_1_process": round(t_dt / t_two, 2),
        "kept_datatrove": dt_kept,
        "kept_ours": our_kept,
        "kept_ours_2_processes": two,
        "note": "ours: input checks + the 4 filters with FineWeb's settings, word-split cache empty at start; "
                "datatrove: the 4 filters chained, a document stops at its first rejection; "
                "2-process figure excludes starting the workers",
    }
    return out


# ---------------------------------------------------------------------------------------------
# Tokenization


def _bare_worker(args):
    path, lo, hi, barrier = args
    from model.tokenizer import get_encoding  # no torch: model/__init__ is lazy, as in our workers

    enc = get_encoding()
    texts = pq.read_table(path, columns=["text"]).column("text").to_pylist()[lo:hi]
    barrier.wait()
    t0, c0 = time.time(), time.process_time()
    n = sum(len(t) for t in enc.encode_ordinary_batch(texts, num_threads=1))
    return t0, time.time(), n, time.process_time() - c0


def bare_tiktoken(path: Path, n_docs: int, processes: int) -> dict:
    """Bare `encode_ordinary_batch` over texts already in memory, `processes` at once."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(processes)
        bounds = [(n_docs * i // processes, n_docs * (i + 1) // processes) for i in range(processes)]
        with ctx.Pool(processes) as pool:
            res = pool.map(_bare_worker, [(str(path), lo, hi, barrier) for lo, hi in bounds])
    start, end = min(r[0] for r in res), max(r[1] for r in res)
    tokens = sum(r[2] for r in res)
    cpu = sum(r[3] for r in res)
    return {"tokens": tokens, "seconds": round(end - start, 3), "tokens_per_s": rate(tokens, end - start),
            "cpu_seconds": round(cpu, 3), "tokens_per_cpu_s": rate(tokens, cpu)}


class TreeRSS:
    """Peak resident memory of a process plus all its descendants, sampled every 20 ms."""

    def __init__(self, pid: int | None = None):
        import psutil

        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import psutil

        while not self._stop.is_set():
            total = 0
            for p in [self.proc, *self.proc.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def write_repeated(docs: list[dict], repeat: int, path: Path) -> int:
    """The samples `repeat` times (ids made unique) as one parquet, written batch by batch."""
    schema = pa.schema([("text", pa.string()), ("id", pa.string()), ("source_file", pa.string())])
    with pq.ParquetWriter(path, schema, compression="zstd") as w:
        for r in range(repeat):
            # 512-document row groups, as the pipeline's own dedup stage writes them
            w.write_table(pa.table({
                "text": [d["text"] for d in docs],
                "id": [f"{d['id']}/{r}" for d in docs],
                "source_file": [d["source_file"] for d in docs],
            }, schema=schema), row_group_size=512)
    return repeat * len(docs)


def bench_tokenize(docs: list[dict], repeat: int, workdir: Path) -> dict:
    from pipelines.tokenize import TokenizeConfig, tokenize_documents

    once = workdir / "once.parquet"
    n_once = write_repeated(docs, 1, once)
    big = workdir / "repeated.parquet"
    n_big = write_repeated(docs, repeat, big)
    bare1 = bare_tiktoken(once, n_once, 1)
    # The same input as ours, before and after ours: other load on the machine shifts both.
    bare2_before = bare_tiktoken(big, n_big, 2)

    import resource

    cfg = TokenizeConfig(workers=2)
    t0 = time.perf_counter()
    small = tokenize_documents(once, workdir / "shards-once", cfg)
    t_small = time.perf_counter() - t0
    usage = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    t0 = time.perf_counter()
    res = tokenize_documents(big, workdir / "shards-repeated", cfg)
    t_big = time.perf_counter() - t0
    cpu_big = sum(resource.getrusage(w).ru_utime + resource.getrusage(w).ru_stime - u.ru_utime - u.ru_stime
                  for w, u in zip((resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN), usage))
    ours_rate = rate(res.tokens, t_big)
    bare2_after = bare_tiktoken(big, n_big, 2)
    bare2 = {k: round((bare2_before[k] + bare2_after[k]) / 2, 2) for k in bare2_before}

    # Memory: the stage's own entry point in a fresh process tree (`hgpt` itself also imports
    # torch for the model commands, which the stage does not need).
    import subprocess

    cmd = [sys.executable, "-m", "pipelines.tokenize", "--docs", str(big), "--out",
           str(workdir / "shards-cli"), "--workers", "2"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with TreeRSS(proc.pid) as rss:
        proc.wait()
    t_cli = time.perf_counter() - t0
    return {
        "bare_tiktoken_1_process": bare1,
        "bare_tiktoken_2_processes_repeated": {"before_ours": bare2_before, "after_ours": bare2_after, "mean": bare2},
        "ours_samples_once": {"tokens": small.tokens, "seconds": round(t_small, 3), "tokens_per_s": rate(small.tokens, t_small)},
        "ours_repeated": {
            "repeat": repeat, "documents": n_big, "tokens": res.tokens, "shards": len(res.shards),
            "seconds": round(t_big, 3), "tokens_per_s": ours_rate,
            "cpu_seconds_all_processes": round(cpu_big, 3), "tokens_per_cpu_s": rate(res.tokens, cpu_big),
            "input_parquet_mib": round(big.stat().st_size / 2**20, 1),
        },
        "ratio_ours_vs_bare_2_processes_wall": round(ours_rate / bare2["tokens_per_s"], 3),
        "ratio_ours_vs_bare_2_processes_cpu": round(rate(res.tokens, cpu_big) / bare2["tokens_per_cpu_s"], 3),
        "memory_cli": {
            "command": "python -m pipelines.tokenize --docs <repeated> --workers 2",
            "exit_code": proc.returncode,
            "seconds_including_interpreter_start": round(t_cli, 3),
            "peak_rss_process_tree_mib": round(rss.peak / 2**20, 1),
        },
        "note": "ours: read parquet, encode in 2 worker processes (started inside the timing), write shards + manifest; "
                "bare: encode_ordinary_batch on texts already in memory, timing excludes process start-up; "
                "the cpu ratio compares work done and is robust to other load on the machine",
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--filter-docs", type=int, default=600,
                    help="documents for the filter benchmark, spread over both snapshots (0: all)")
    ap.add_argument("--repeat", type=int, default=10, help="the samples repeated this many times for tokenization")
    ap.add_argument("--skip-filters", action="store_true")
    ap.add_argument("--skip-tokenize", action="store_true")
    args = ap.parse_args()

    docs_all = load_docs(None)
    report: dict = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg_at_start": os.getloadavg()},
        "data": "docs-sample snapshots a and b (Python/Debian/Linux documentation, not FineWeb)",
    }
    if not args.skip_filters:
        try:
            report["filters"] = bench_filters(load_docs(args.filter_docs))
        except ImportError as exc:
            report["filters"] = {"skipped": f"datatrove not importable: {exc}"}
    if not args.skip_tokenize:
        with tempfile.TemporaryDirectory() as tmp:
            report["tokenize"] = bench_tokenize(docs_all, args.repeat, Path(tmp))
    report["machine"]["load_avg_at_end"] = os.getloadavg()
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Stage 4: describe a processed snapshot with DuckDB: documents and tokens per dump, token-length
quantiles and histogram, rejections per filter and rule, duplicates, language_score where
present, top domains. Writes `stats.json`, one parquet per table and PNG plots.

The work is a list of tasks over slices of row groups of the inputs, run in this process, a
local process pool or on Ray (`pipelines.executors`), each with its completion record in a work
directory beside the output, so a rerun after a crash redoes only the tasks that did not finish:

1. manifest slices: tokens and documents per split with their shards, a histogram of document
   lengths, the documents' (row, tokens) sorted by row, and their lengths sorted;
2. rejected and duplicates slices: documents per filter and rule (or kind), sorted language_scores;
3. kept slices: each row's tokens, found by row in (1)'s sorted files, give documents and tokens
   per dump (an inner join, as one query's); documents per domain; sorted language_scores.

The merge adds the parts up with DuckDB (the counts are exact, so the sums are the single query's,
in the same column types). A quantile needs two order statistics, found by bisection over the
sorted files (a count below a value is a binary search in each), and DuckDB's own interpolation
of them (quantile_cont of the two values at the fraction between them: the same arithmetic); the
mean is DuckDB's avg of the same count and sum. So the tables, stats.json and plots are
byte-identical whatever the tasks and workers, and memory is bounded by the tasks' slices and
`memory_mb` (DuckDB's limit; it spills to the work directory), never by the corpus.

    hgpt data stats --run-dir /tmp/hgpt/<snapshot-key> --out /tmp/hgpt/<snapshot-key>/stats
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines import atomic
from pipelines.executors import check_executor, open_executor, recorded, row_group_slices
from pipelines.filtering import default_workers

STAGE_VERSION = "stats-1"
QUANTILES = (0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99)
DOMAIN = "regexp_extract(url, '^[a-zA-Z][a-zA-Z0-9+.-]*://([^/:?#]+)', 1)"
_DOC = np.dtype([("row", "<i8"), ("tokens", "<i8")])


@dataclass(frozen=True)
class StatsConfig:
    """What is described (`output_fields`), and how the work is cut and run, which never changes
    the output: `tasks` per input (0: one per ~`task_rows` rows, at least `workers`) on the
    `executor` ("local" or "ray", at `ray_address`); `memory_mb` bounds each DuckDB connection."""

    top_domains: int = 20
    histogram_bins: int = 40
    plots: bool = True
    workers: int = field(default_factory=default_workers)
    task_rows: int = 50_000
    tasks: int = 0
    memory_mb: int = 1024
    executor: str = "local"
    ray_address: str | None = None

    def __post_init__(self) -> None:
        if self.top_domains < 1 or self.histogram_bins < 2:
            raise ValueError("top_domains must be >= 1 and histogram_bins >= 2")
        if self.workers < 1 or self.task_rows < 1 or self.tasks < 0 or self.memory_mb < 16:
            raise ValueError("workers and task_rows must be >= 1, tasks >= 0, memory_mb >= 16")
        check_executor(self.executor, self.ray_address)

    def output_fields(self) -> dict:
        """The settings the output depends on (the fingerprint); the others only cut the work."""
        return {"top_domains": self.top_domains, "histogram_bins": self.histogram_bins, "plots": self.plots}


@dataclass
class StatsResult:
    snapshot: str
    summary: dict
    tables: dict[str, str]
    plots: list[str]
    stats_json: str
    fingerprint: str
    tasks: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


def _rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict]:
    cur = con.execute(sql)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, (_plain(v) for v in row))) for row in cur.fetchall()]


def _plain(v):
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def _q(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _connect(memory_mb: int, spill: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET threads TO 2")
    con.execute(f"SET memory_limit = '{memory_mb}MB'")
    con.execute(f"SET temp_directory = {_q(spill)}")
    return con


# --- sorted runs and order statistics -----------------------------------------------------------

def _sort_keys(values: np.ndarray) -> np.ndarray:
    """uint64 keys in the order of the values (int64 or float64, no NaN), sorted."""
    if values.dtype.kind == "f":
        bits = values.astype(np.float64).view(np.uint64)
        keys = np.where(bits >> np.uint64(63), ~bits, bits | np.uint64(1 << 63))
    else:
        keys = values.astype(np.int64).view(np.uint64) ^ np.uint64(1 << 63)
    return np.sort(keys)


def _key_value(key: int, kind: str) -> float:
    k = np.uint64(key)
    if kind == "f":
        bits = k ^ np.uint64(1 << 63) if k >> np.uint64(63) else ~k
        return float(np.array([bits], np.uint64).view(np.float64)[0])
    return float(np.array([k ^ np.uint64(1 << 63)], np.uint64).view(np.int64)[0])


def _kth(runs: list[np.ndarray], k: int) -> int:
    """The key of rank `k` (0-based) among sorted runs, by bisection over the key space: the
    runs are read a binary search at a time (memory-mapped), never loaded."""
    lo, hi = 0, 2**64 - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if sum(int(np.searchsorted(r, np.uint64(mid), side="right")) for r in runs) > k:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _quantiles(con, runs: list[np.ndarray], kind: str) -> list[float] | None:
    """quantile_cont(values, QUANTILES) of the values in `runs`, as DuckDB computes it: the order
    statistics at floor and ceil of (n - 1) q, interpolated by DuckDB itself."""
    n = sum(len(r) for r in runs)
    if n == 0:
        return None
    out = []
    for q in QUANTILES:
        rn = float(n - 1) * q
        f, c = math.floor(rn), math.ceil(rn)
        lo = _key_value(_kth(runs, f), kind)
        if f == c:
            out.append(lo)
            continue
        hi = _key_value(_kth(runs, c), kind)
        # two values at the fraction between them: DuckDB's interpolation of exactly these
        out.append(con.execute(f"SELECT quantile_cont(x, '{rn - f!r}'::DOUBLE) FROM "
                               f"(VALUES ('{lo!r}'::DOUBLE), ('{hi!r}'::DOUBLE)) t(x)").fetchall()[0][0])
    return out


def _mean(con, total: int, n: int) -> float | None:
    """DuckDB's avg of BIGINTs that number `n` and sum to `total` (its own division), streamed."""
    if n == 0:
        return None
    return con.execute(f"SELECT avg(CASE WHEN i = 0 THEN {total}::BIGINT ELSE 0::BIGINT END) "
                       f"FROM range({n}) t(i)").fetchall()[0][0]


def _mapped(path: str | Path) -> np.ndarray:
    """A task's array file, memory-mapped (an empty one cannot be: it is read)."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError:
        return np.load(path, allow_pickle=False)


def _runs(paths: list[Path]) -> list[np.ndarray]:
    return [run for run in map(_mapped, paths) if len(run)]


# --- the tasks ----------------------------------------------------------------------------------

def _slice_table(path: str, g0: int, g1: int, columns: list[str]) -> pa.Table:
    pf = pq.ParquetFile(path)
    tables = [pf.read_row_group(g, columns=columns) for g in range(g0, g1)]
    return pa.concat_tables(tables) if tables else pf.schema_arrow.empty_table().select(columns)


def _task_dir(job: dict) -> Path:
    d = Path(job["work"]) / job["input"]
    d.mkdir(parents=True, exist_ok=True)
    return d


def _part(con, sql: str, path: Path) -> int:
    """A task's partial table, as parquet with statistics; returns the documents it counts. The
    merge reads the parts, so DuckDB knows a column without NULL (and writes it as required) from
    them as the single query knew it from the inputs' statistics."""
    con.execute(f"COPY ({sql}) TO {_q(path)} (FORMAT parquet)")
    return int(con.execute(f"SELECT coalesce(sum(documents), 0) FROM read_parquet({_q(path)})").fetchall()[0][0])


@recorded(lambda job: f"{job['input']}/{job['task']:05d}.done.json")
def _manifest_task(job: dict) -> dict:
    """Splits, length histogram, (row, tokens) by row and sorted lengths of a manifest slice."""
    d, i, (g0, g1, r0, r1) = _task_dir(job), job["task"], job["slice"]
    t = _slice_table(job["path"], g0, g1, ["split", "shard", "n_tokens", "doc_index", "part", "doc_tokens"])
    con = _connect(job["memory_mb"], d)
    con.register("t", t)
    _part(con, "SELECT split, shard, count(*) FILTER (part = 0) AS documents, sum(n_tokens)::BIGINT AS tokens "
          "FROM t GROUP BY ALL ORDER BY ALL", d / f"{i:05d}.splits.parquet")
    _part(con, f"SELECT floor(log10(doc_tokens) * {job['bins'] / 7}) AS bin, count(*) AS documents "
          f"FROM t WHERE part = 0 GROUP BY 1 ORDER BY 1", d / f"{i:05d}.hist.parquet")
    con.close()
    first = t.filter(pc.equal(t["part"], 0))
    docs = np.empty(first.num_rows, _DOC)
    docs["row"], docs["tokens"] = first["doc_index"].to_numpy(), first["doc_tokens"].to_numpy()
    docs.sort(order="row")
    np.save(d / f"{i:05d}.docs.npy", docs, allow_pickle=False)
    np.save(d / f"{i:05d}.lengths.npy", _sort_keys(docs["tokens"]), allow_pickle=False)
    if t.num_rows != r1 - r0:
        raise AssertionError(f"statistics task {i}: manifest rows {r0}..{r1}, {t.num_rows} read")
    return {"task": i, "rows": t.num_rows, "documents": first.num_rows,
            "tokens": int(docs["tokens"].sum()), "pieces_tokens": int(pc.sum(t["n_tokens"]).as_py() or 0)}


@recorded(lambda job: f"{job['input']}/{job['task']:05d}.done.json")
def _rows_task(job: dict) -> dict:
    """Rejected or duplicate documents of a slice, by reason; rejected ones' sorted language_scores."""
    d, i, (g0, g1, r0, r1) = _task_dir(job), job["task"], job["slice"]
    rejected = job["input"] == "rejected"
    cols = ["filter", "rule"] + (["language_score"] if job["has_score"] else []) if rejected else ["kind"]
    t = _slice_table(job["path"], g0, g1, cols)
    con = _connect(job["memory_mb"], d)
    con.register("t", t)
    keys = "filter, rule" if rejected else "kind"
    counted = _part(con, f"SELECT {keys}, count(*) AS documents FROM t GROUP BY ALL ORDER BY ALL",
                    d / f"{i:05d}.reasons.parquet")
    con.close()
    if rejected:
        _save_scores(d / f"{i:05d}.scores.npy", t if job["has_score"] else None)
    if t.num_rows != r1 - r0 or counted != t.num_rows:
        raise AssertionError(f"statistics task {i} ({job['input']}): rows {r0}..{r1}, {t.num_rows} read, "
                             f"{counted} counted")
    return {"task": i, "rows": t.num_rows}


def _save_scores(path: Path, t: pa.Table | None) -> None:
    scores = np.empty(0, np.float64) if t is None else \
        t["language_score"].drop_null().cast(pa.float64()).to_numpy()
    np.save(path, _sort_keys(scores), allow_pickle=False)


@recorded(lambda job: f"{job['input']}/{job['task']:05d}.done.json")
def _kept_task(job: dict) -> dict:
    """Documents and tokens per dump (rows joined with their manifest tokens), documents per
    domain (a parquet part: the domains are not bounded) and sorted language_scores of a slice."""
    d, i, (g0, g1, r0, r1) = _task_dir(job), job["task"], job["slice"]
    t = _slice_table(job["path"], g0, g1, ["dump", "url"] + (["language_score"] if job["has_score"] else []))
    matches, tokens = np.zeros(r1 - r0, np.int64), np.zeros(r1 - r0, np.int64)
    for path in job["manifest_docs"]:  # each sorted by row: this slice's rows are one range of it
        docs = _mapped(path)
        lo, hi = np.searchsorted(docs["row"], [r0, r1])
        part = np.array(docs[lo:hi])
        np.add.at(matches, part["row"] - r0, 1)
        np.add.at(tokens, part["row"] - r0, part["tokens"])
    t = t.append_column("matches", pa.array(matches)).append_column("doc_tokens", pa.array(tokens))
    con = _connect(job["memory_mb"], d)
    con.register("t", t)
    _part(con, "SELECT dump, sum(matches)::BIGINT AS documents, sum(doc_tokens)::BIGINT AS tokens FROM t "
          "WHERE matches > 0 GROUP BY 1 ORDER BY 1", d / f"{i:05d}.dumps.parquet")
    domains = con.sql(f"SELECT {DOMAIN} AS domain, count(*) AS documents FROM t WHERE url IS NOT NULL "
                          f"GROUP BY 1 ORDER BY 1").to_arrow_table()
    con.close()
    # without statistics: the single query's domains came from regexp_extract, which has none
    tmp = d / f".{i:05d}.domains.tmp-{os.getpid()}.parquet"
    pq.write_table(domains, tmp, write_statistics=False)
    os.replace(tmp, d / f"{i:05d}.domains.parquet")
    _save_scores(d / f"{i:05d}.scores.npy", t if job["has_score"] else None)
    if t.num_rows != r1 - r0:
        raise AssertionError(f"statistics task {i} (kept): rows {r0}..{r1}, {t.num_rows} read")
    return {"task": i, "rows": t.num_rows}


# --- the stage ----------------------------------------------------------------------------------

def compute_statistics(kept_parquet: str | os.PathLike, rejected_parquet: str | os.PathLike,
                       duplicates_parquet: str | os.PathLike | None, manifest_parquet: str | os.PathLike,
                       out_dir: str | os.PathLike, snapshot_key: str = "snapshot",
                       cfg: StatsConfig = StatsConfig()) -> StatsResult:
    """Statistics of one snapshot's outputs (final kept documents, rejected, duplicates, manifest)."""
    kept, rejected, manifest = Path(kept_parquet), Path(rejected_parquet), Path(manifest_parquet)
    dups = Path(duplicates_parquet) if duplicates_parquet else None
    inputs = [kept, rejected, manifest] + ([dups] if dups else [])
    fp = atomic.fingerprint(stage=STAGE_VERSION, inputs=[atomic.sha256_file(p) for p in inputs],
                            cfg=cfg.output_fields(), key=snapshot_key)
    out_dir = Path(out_dir)
    done = atomic.completed(out_dir, fp)
    if done is not None:
        return StatsResult(**done["result"])

    plans = {name: row_group_slices(path, cfg.tasks, cfg.workers, cfg.task_rows)
             for name, path in (("manifest", manifest), ("rejected", rejected), ("kept", kept),
                                ("dups", dups)) if path is not None}
    run_id = atomic.fingerprint(fp=fp, plans=plans)[:16]
    with atomic.staged_dir(out_dir) as stage, atomic.work_dir(out_dir, run_id) as work:
        columns = {name: pq.ParquetFile(p).schema_arrow.names for name, p in (("kept", kept), ("rejected", rejected))}
        # Absolute paths: a Ray worker need not share this process's working directory.
        paths = {"manifest": manifest, "rejected": rejected, "kept": kept, "dups": dups}
        common = {"work": str(work.absolute()), "memory_mb": cfg.memory_mb, "bins": cfg.histogram_bins}

        def jobs(name: str, **extra) -> list[dict]:
            return [{**common, **extra, "input": name, "task": i, "slice": list(sl),
                     "path": str(paths[name].absolute())} for i, sl in enumerate(plans.get(name, []))]

        m_jobs, r_jobs = jobs("manifest"), jobs("rejected", has_score="language_score" in columns["rejected"])
        d_jobs = jobs("dups")
        docs_files = [str(work / "manifest" / f"{j['task']:05d}.docs.npy") for j in m_jobs]
        k_jobs = jobs("kept", has_score="language_score" in columns["kept"], manifest_docs=docs_files)
        all_jobs = m_jobs + r_jobs + d_jobs
        with open_executor(cfg.executor, min(cfg.workers, len(all_jobs)), cfg.ray_address) as ex:
            recs = list(ex.map(_manifest_task, m_jobs))
            recs += list(ex.map(_rows_task, r_jobs + d_jobs))
            recs += list(ex.map(_kept_task, k_jobs))  # they read the manifest tasks' files
        m_recs, r_recs = recs[:len(m_jobs)], recs[len(m_jobs):len(m_jobs) + len(r_jobs)]
        d_recs = recs[len(m_jobs) + len(r_jobs):len(all_jobs)]
        k_recs = recs[len(all_jobs):]
        for name, rs in (("manifest", m_recs), ("rejected", r_recs), ("dups", d_recs), ("kept", k_recs)):
            if paths[name] is not None and sum(r["rows"] for r in rs) != pq.ParquetFile(paths[name]).metadata.num_rows:
                raise AssertionError(f"statistics: the {name} tasks did not read every row of {paths[name]}")
        result, results = _merge(work, stage, out_dir, cfg, snapshot_key, fp, m_recs, r_recs, d_recs, k_recs)
        result.tasks = len(all_jobs) + len(k_jobs)
        plots = _plots(results, stage) if cfg.plots else []
        result.plots = [str(out_dir / p) for p in plots]
        atomic.write_json_atomic(stage / atomic.SUCCESS, {"fingerprint": fp, "result": result.to_dict()})
    return result


def _table(rows: list[dict], schema: list[tuple[str, pa.DataType]]) -> pa.Table:
    return pa.table({name: pa.array([r[name] for r in rows], type) for name, type in schema})


def _one_file(parts: list[Path], out: Path) -> Path:
    """The parts as one parquet file, a row group at a time: DuckDB uses the statistics of one
    file's row groups (so a column is known to hold no NULL, as in the single query) but not
    those of several files."""
    with pq.ParquetWriter(out, pq.ParquetFile(parts[0]).schema_arrow) as w:
        for part in parts:
            pf = pq.ParquetFile(part)
            for g in range(pf.metadata.num_row_groups):
                w.write_table(pf.read_row_group(g))
    return out


def _merge(work: Path, stage: Path, out_dir: Path, cfg: StatsConfig, key: str, fp: str,
           m_recs, r_recs, d_recs, k_recs) -> tuple[StatsResult, dict]:
    """The tables from the tasks' parts, in the single query's column types and order."""
    spill = work / "spill"
    spill.mkdir(exist_ok=True)
    con = _connect(cfg.memory_mb, spill)
    documents = sum(r["documents"] for r in m_recs)
    lengths = _runs([work / "manifest" / f"{r['task']:05d}.lengths.npy" for r in m_recs])
    length_row = {
        "documents": documents,
        "min": _key_value(_kth(lengths, 0), "i") if documents else None,
        "mean": _mean(con, sum(r["tokens"] for r in m_recs), documents),
        "max": _key_value(_kth(lengths, documents - 1), "i") if documents else None,
        "quantiles": _quantiles(con, lengths, "i"),
    }
    length_row["min"], length_row["max"] = (None if v is None else int(v) for v in (length_row["min"], length_row["max"]))
    length_q = _table([length_row], [("documents", pa.int64()), ("min", pa.int64()), ("mean", pa.float64()),
                                     ("max", pa.int64()), ("quantiles", pa.list_(pa.float64()))])
    scores = _runs([work / name / f"{r['task']:05d}.scores.npy" for name, rs in (("kept", k_recs), ("rejected", r_recs))
                    for r in rs])
    lang_q = _table([{"documents_with_score": sum(len(r) for r in scores),
                      "documents": sum(r["rows"] for r in k_recs + r_recs),
                      "quantiles": _quantiles(con, scores, "f")}],
                    [("documents_with_score", pa.int64()), ("documents", pa.int64()),
                     ("quantiles", pa.list_(pa.float64()))])
    con.register("length_q", length_q)
    con.register("lang_q", lang_q)
    if not d_recs:  # no duplicates file: the single query's stand-in, a NULL kind (a nullable rule)
        con.execute("CREATE VIEW kinds AS SELECT NULL::VARCHAR AS kind, 0::BIGINT AS documents WHERE false")
    for view, name, recs in (("dumps", "kept", k_recs), ("splits", "manifest", m_recs), ("hist", "manifest", m_recs),
                             ("reasons", "rejected", r_recs), ("kinds", "dups", d_recs)):
        if recs:
            part = "reasons" if view == "kinds" else view
            files = [work / name / f"{r['task']:05d}.{part}.parquet" for r in recs]
            con.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet({_q(_one_file(files, spill / view))})")
    domain_parts = [str(work / "kept" / f"{r['task']:05d}.domains.parquet") for r in k_recs]
    domains = f"read_parquet([{', '.join(_q(Path(p)) for p in domain_parts)}])"
    x = cfg.histogram_bins / 7
    tables: dict[str, str] = {
        "per_dump": "SELECT coalesce(dump, '(none)') AS dump, sum(documents)::BIGINT AS documents, "
                    "sum(tokens) AS tokens FROM dumps GROUP BY 1 ORDER BY 1",
        "per_split": "SELECT split, sum(documents)::BIGINT AS documents, sum(tokens) AS tokens, "
                     "count(DISTINCT shard) AS shards FROM splits GROUP BY 1 ORDER BY 1",
        "token_length_quantiles": "SELECT * FROM length_q",
        "token_length_histogram": f"SELECT bin, pow(10, bin / {x}) AS lower_tokens, sum(documents)::BIGINT "
                                  f"AS documents FROM hist GROUP BY bin ORDER BY bin",
        "rejections": """
            SELECT filter, rule, sum(documents)::BIGINT AS documents FROM reasons GROUP BY ALL
            UNION ALL SELECT 'dedup', kind, sum(documents)::BIGINT FROM kinds GROUP BY ALL
            ORDER BY filter, documents DESC, rule""",
        "language_score": "SELECT * FROM lang_q",
        "top_domains": f"SELECT domain, sum(documents)::BIGINT AS documents FROM {domains} GROUP BY 1 "
                       f"ORDER BY documents DESC, domain LIMIT {cfg.top_domains}",
    }
    results = {name: _rows(con, sql) for name, sql in tables.items()}
    summary = {
        "snapshot": key,
        "kept_documents": sum(r["rows"] for r in k_recs),
        "rejected_documents": sum(r["rows"] for r in r_recs),
        "duplicate_documents": sum(r["rows"] for r in d_recs),
        "tokens": sum(r["pieces_tokens"] for r in m_recs),
        "quantile_levels": list(QUANTILES),
    }
    table_paths = {}
    for name, sql in tables.items():
        con.execute(f"COPY ({sql}) TO {_q(stage / (name + '.parquet'))} (FORMAT parquet)")
        table_paths[name] = str(out_dir / f"{name}.parquet")
    con.close()
    shutil.rmtree(spill, ignore_errors=True)
    atomic.write_json_atomic(stage / "stats.json", {"summary": summary, **results})
    result = StatsResult(snapshot=key, summary=summary, tables=table_paths, plots=[],
                         stats_json=str(out_dir / "stats.json"), fingerprint=fp)
    return result, results


def _plots(results: dict, stage: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(stage / name, dpi=100, metadata={"Software": None})
        plt.close(fig)
        names.append(name)

    hist = results["token_length_histogram"]
    fig, ax = plt.subplots(figsize=(7, 4))
    if hist:
        ax.bar(range(len(hist)), [h["documents"] for h in hist])
        ax.set_xticks(range(len(hist)), [f"{h['lower_tokens']:.0f}" for h in hist], rotation=90, fontsize=7)
    ax.set(title="Document length (GPT-2 tokens, log bins)", xlabel="tokens (bin start)", ylabel="documents")
    save(fig, "token_length_histogram.png")

    rej = results["rejections"]
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.3 * len(rej) + 1)))
    ax.barh([f"{r['filter']}/{r['rule']}" for r in rej][::-1], [r["documents"] for r in rej][::-1])
    ax.set(title="Documents removed, by filter and rule", xlabel="documents")
    ax.tick_params(axis="y", labelsize=7)
    save(fig, "rejections.png")

    dom = results["top_domains"]
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.3 * len(dom) + 1)))
    ax.barh([d["domain"] or "(none)" for d in dom][::-1], [d["documents"] for d in dom][::-1])
    ax.set(title="Top domains of kept documents", xlabel="documents")
    ax.tick_params(axis="y", labelsize=7)
    save(fig, "top_domains.png")

    lang = results["language_score"][0] if results["language_score"] else {}
    if lang.get("documents_with_score"):
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.plot(list(QUANTILES), lang["quantiles"], marker="o")
        ax.set(title="language_score quantiles", xlabel="quantile", ylabel="language_score")
        save(fig, "language_score.png")
    return names


def main(argv: list[str]) -> int:  # pragma: no cover - convenience
    print(json.dumps(compute_statistics(*argv).to_dict(), indent=2))
    return 0

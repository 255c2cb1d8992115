"""Stage 4: describe a processed snapshot with DuckDB: documents and tokens per dump, token-length
quantiles and histogram, rejections per filter and rule, duplicates, language_score where
present, top domains. Writes `stats.json`, one parquet per table and PNG plots.

    hgpt data stats --run-dir /tmp/hgpt/<snapshot-key> --out /tmp/hgpt/<snapshot-key>/stats
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb

from pipelines import atomic

STAGE_VERSION = "stats-1"
QUANTILES = (0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99)


@dataclass(frozen=True)
class StatsConfig:
    top_domains: int = 20
    histogram_bins: int = 40
    plots: bool = True

    def __post_init__(self) -> None:
        if self.top_domains < 1 or self.histogram_bins < 2:
            raise ValueError("top_domains must be >= 1 and histogram_bins >= 2")


@dataclass
class StatsResult:
    snapshot: str
    summary: dict
    tables: dict[str, str]
    plots: list[str]
    stats_json: str
    fingerprint: str

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


def compute_statistics(kept_parquet: str | os.PathLike, rejected_parquet: str | os.PathLike,
                       duplicates_parquet: str | os.PathLike | None, manifest_parquet: str | os.PathLike,
                       out_dir: str | os.PathLike, snapshot_key: str = "snapshot",
                       cfg: StatsConfig = StatsConfig()) -> StatsResult:
    """Statistics of one snapshot's outputs (final kept documents, rejected, duplicates, manifest)."""
    kept, rejected, manifest = Path(kept_parquet), Path(rejected_parquet), Path(manifest_parquet)
    dups = Path(duplicates_parquet) if duplicates_parquet else None
    inputs = [kept, rejected, manifest] + ([dups] if dups else [])
    fp = atomic.fingerprint(stage=STAGE_VERSION, inputs=[atomic.sha256_file(p) for p in inputs], cfg=asdict(cfg), key=snapshot_key)
    out_dir = Path(out_dir)
    done = atomic.completed(out_dir, fp)
    if done is not None:
        return StatsResult(**done["result"])

    con = duckdb.connect()
    con.execute("SET threads TO 2")
    con.execute(f"CREATE VIEW kept AS SELECT * EXCLUDE (text), length(text) AS chars FROM read_parquet({_q(kept)}, file_row_number = true)")
    con.execute(f"CREATE VIEW rejected AS SELECT * EXCLUDE (text) FROM read_parquet({_q(rejected)})")
    con.execute(f"CREATE VIEW manifest AS SELECT * FROM read_parquet({_q(manifest)})")
    con.execute("CREATE VIEW docs AS SELECT * FROM manifest WHERE part = 0")
    if dups:
        con.execute(f"CREATE VIEW dups AS SELECT * FROM read_parquet({_q(dups)})")
    else:
        con.execute("CREATE VIEW dups AS SELECT NULL::VARCHAR AS kind WHERE false")

    q = ", ".join(str(x) for x in QUANTILES)
    tables: dict[str, str] = {
        "per_dump": """
            SELECT coalesce(k.dump, '(none)') AS dump, count(*) AS documents, sum(d.doc_tokens) AS tokens
            FROM kept k JOIN docs d ON d.doc_index = k.file_row_number
            GROUP BY 1 ORDER BY 1""",
        "per_split": """
            SELECT split, count(DISTINCT doc_index) AS documents, sum(n_tokens) AS tokens, count(DISTINCT shard) AS shards
            FROM manifest GROUP BY 1 ORDER BY 1""",
        "token_length_quantiles": f"""
            SELECT count(*) AS documents, min(doc_tokens) AS min, avg(doc_tokens) AS mean, max(doc_tokens) AS max,
                   quantile_cont(doc_tokens, [{q}]) AS quantiles
            FROM docs""",
        "token_length_histogram": f"""
            WITH b AS (SELECT floor(log10(doc_tokens) * {cfg.histogram_bins / 7}) AS bin FROM docs)
            SELECT bin, pow(10, bin / {cfg.histogram_bins / 7}) AS lower_tokens, count(*) AS documents
            FROM b GROUP BY bin ORDER BY bin""",
        "rejections": """
            SELECT filter, rule, count(*) AS documents FROM rejected GROUP BY ALL
            UNION ALL SELECT 'dedup', kind, count(*) FROM dups GROUP BY ALL
            ORDER BY filter, documents DESC, rule""",
        "language_score": f"""
            WITH s AS (SELECT language_score FROM kept UNION ALL SELECT language_score FROM rejected)
            SELECT count(language_score) AS documents_with_score, count(*) AS documents,
                   quantile_cont(language_score, [{q}]) AS quantiles FROM s""",
        "top_domains": f"""
            SELECT regexp_extract(url, '^[a-zA-Z][a-zA-Z0-9+.-]*://([^/:?#]+)', 1) AS domain, count(*) AS documents
            FROM kept WHERE url IS NOT NULL GROUP BY 1 ORDER BY documents DESC, domain LIMIT {cfg.top_domains}""",
    }
    results = {name: _rows(con, sql) for name, sql in tables.items()}
    summary = {
        "snapshot": snapshot_key,
        "kept_documents": con.execute("SELECT count(*) FROM kept").fetchone()[0],
        "rejected_documents": con.execute("SELECT count(*) FROM rejected").fetchone()[0],
        "duplicate_documents": con.execute("SELECT count(*) FROM dups").fetchone()[0],
        "tokens": con.execute("SELECT coalesce(sum(n_tokens), 0) FROM manifest").fetchone()[0],
        "quantile_levels": list(QUANTILES),
    }

    with atomic.staged_dir(out_dir) as stage:
        table_paths = {}
        for name, sql in tables.items():
            con.execute(f"COPY ({sql}) TO {_q(stage / (name + '.parquet'))} (FORMAT parquet)")
            table_paths[name] = str(out_dir / f"{name}.parquet")
        plots = _plots(results, stage) if cfg.plots else []
        atomic.write_json_atomic(stage / "stats.json", {"summary": summary, **results})
        result = StatsResult(snapshot=snapshot_key, summary=summary, tables=table_paths,
                             plots=[str(out_dir / p) for p in plots], stats_json=str(out_dir / "stats.json"),
                             fingerprint=fp)
        atomic.write_json_atomic(stage / atomic.SUCCESS, {"fingerprint": fp, "result": result.to_dict()})
    con.close()
    return result


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

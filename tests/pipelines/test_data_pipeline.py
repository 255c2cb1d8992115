"""The chained pipeline: conservation on every run, byte-identical reruns, statistics, CLI."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pyarrow.parquet as pq

from hgpt.cli import main as hgpt_main
from pipelines.dedup import DedupConfig
from pipelines.filtering import FilterStageConfig
from pipelines.run import PipelineConfig, run_pipeline
from pipelines.sources import local_snapshot
from pipelines.tokenize import TokenizeConfig

CFG = PipelineConfig(filter=FilterStageConfig(workers=1), tokenize=TokenizeConfig(shard_tokens=20_000, workers=1))


def _outputs(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix in (".bin", ".parquet")}


def test_run_conserves_documents_and_is_byte_identical(small_snapshot_dir, tmp_path):
    snap = local_snapshot(small_snapshot_dir)
    res = run_pipeline(snap, tmp_path / "a", CFG)
    c = res.conservation
    assert c["ok"] and c["documents_in"] == 60 == c["kept"] + c["rejected"] + c["duplicates"]
    assert c["kept"] > 0 and c["rejected"] > 0
    report = json.loads((tmp_path / "a" / snap.key / "report.json").read_text())
    assert report["conservation"]["ok"] and report["conservation"]["checks"]
    other = run_pipeline(snap, tmp_path / "b", CFG)
    assert other.tokenize.content_hash == res.tokenize.content_hash
    a, b = _outputs(tmp_path / "a" / snap.key), _outputs(tmp_path / "b" / snap.key)
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    assert any(k.startswith("shards/train_") for k in a) and "shards/val_000000.bin" in a


def test_statistics_describe_the_run(small_snapshot_dir, tmp_path):
    res = run_pipeline(local_snapshot(small_snapshot_dir), tmp_path, CFG)
    stats = json.loads(open(res.stats.stats_json).read())
    assert stats["summary"]["kept_documents"] == res.conservation["kept"]
    assert sum(r["documents"] for r in stats["per_dump"]) == res.conservation["kept"]
    assert sum(r["tokens"] for r in stats["per_split"]) == res.tokenize.tokens
    assert sum(r["documents"] for r in stats["rejections"]) == res.conservation["rejected"] + res.conservation["duplicates"]
    q = stats["token_length_quantiles"][0]
    assert q["min"] <= q["quantiles"][3] <= q["max"] and len(q["quantiles"]) == 7
    assert stats["top_domains"] and stats["top_domains"][0]["domain"]
    assert stats["language_score"][0]["documents_with_score"] == 0  # the sample has no scores
    for png in res.stats.plots:
        assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    for table in res.stats.tables.values():
        pq.read_table(table)


def test_second_snapshot_does_not_readd_the_first(small_snapshot_dir, tmp_path):
    cross = replace(CFG, dedup=DedupConfig(cross_snapshot=True))
    first = run_pipeline(local_snapshot(small_snapshot_dir), tmp_path, cross)
    again = tmp_path / "inbox" / "snap-later"
    again.mkdir(parents=True)
    shutil.copy(small_snapshot_dir / "part-1.parquet", again / "copy.parquet")
    alone = run_pipeline(local_snapshot(again), tmp_path / "alone", CFG)  # the default: each snapshot alone
    assert alone.dedup.exact_duplicates == 0 and alone.dedup.kept == alone.filter.kept > 0
    later = run_pipeline(local_snapshot(again), tmp_path, cross)
    assert later.dedup.kept == 0 and later.dedup.exact_duplicates == later.filter.kept > 0
    assert later.conservation["ok"]
    # rerunning the first snapshot is idempotent: same shards, it is never deduplicated against itself
    shutil.rmtree(tmp_path / first.snapshot["key"])
    rerun = run_pipeline(local_snapshot(small_snapshot_dir), tmp_path, cross)
    assert rerun.tokenize.content_hash == first.tokenize.content_hash


def test_cli_run_and_stages(small_snapshot_dir, tmp_path, capsys):
    rc = hgpt_main(["data", "run", "--input", str(small_snapshot_dir), "--data-root", str(tmp_path / "root"),
                    "--workers", "1", "--shard-tokens", "20000"])
    out, err = capsys.readouterr()
    assert rc == 0
    result = json.loads(out)
    assert result["conservation"]["ok"]
    assert "60 documents in =" in err
    key = result["snapshot"]["key"]
    rc = hgpt_main(["data", "stats", "--run-dir", str(tmp_path / "root" / key), "--out", str(tmp_path / "stats2")])
    assert rc == 0 and (tmp_path / "stats2" / "stats.json").exists()
    capsys.readouterr()
    rc = hgpt_main(["data", "filter", "--input", str(small_snapshot_dir), "--out", str(tmp_path / "f"), "--workers", "1"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["docs_in"] == 60
    rc = hgpt_main(["data", "dedup", "--kept", str(tmp_path / "f" / "kept.parquet"), "--out", str(tmp_path / "d"),
                    "--index", str(tmp_path / "idx"), "--key", "snap"])
    assert rc == 0
    capsys.readouterr()
    rc = hgpt_main(["data", "tokenize", "--docs", str(tmp_path / "d" / "kept.parquet"), "--out", str(tmp_path / "t"),
                    "--workers", "1"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["docs"] > 0
    rc = hgpt_main(["data", "snapshots", "--inbox", str(small_snapshot_dir.parent)])
    assert rc == 0 and json.loads(capsys.readouterr().out)[0]["key"] == key


def test_cli_bad_file_is_an_error_unless_skipped(tmp_path, small_snapshot_dir, capsys):
    (small_snapshot_dir / "zz_broken.parquet").write_bytes(b"not parquet")
    rc = hgpt_main(["data", "filter", "--input", str(small_snapshot_dir), "--out", str(tmp_path / "f"), "--workers", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "zz_broken.parquet" in err and "--on-error skip" in err
    rc = hgpt_main(["data", "filter", "--input", str(small_snapshot_dir), "--out", str(tmp_path / "f"), "--workers", "1",
                    "--on-error", "skip"])
    result = json.loads(capsys.readouterr().out)
    assert rc == 0 and result["docs_in"] == 60 and "zz_broken.parquet" in result["skipped_files"][0]["file"]


def test_cli_hub_unreachable_is_a_clear_error(tmp_path, capsys, monkeypatch):
    from hub_server import unreachable_endpoint

    from pipelines import sources

    monkeypatch.setenv("HF_ENDPOINT", unreachable_endpoint())  # the real client, no network
    monkeypatch.setattr(sources, "HUB_RETRY_WAITS_S", ())
    rc = hgpt_main(["data", "hub", "--name", "sample-10BT", "--data-root", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "local snapshot" in err and len(err.strip().splitlines()) == 1


def test_language_score_statistics_where_present(tmp_path):
    from pipeline_helpers import doc, prose, write_parquet

    rows = [doc(prose(25, seed=i), i, language="en", language_score=s) for i, s in enumerate([0.95, 0.8, 0.7, 0.5])]
    write_parquet(tmp_path / "scored" / "a.parquet", rows)
    res = run_pipeline(local_snapshot(tmp_path / "scored"), tmp_path / "root", CFG)
    assert res.filter.rejected_by_rule == {"input/language_score": 1}
    stats = json.loads(open(res.stats.stats_json).read())
    assert stats["language_score"][0]["documents_with_score"] == 4
    assert any(p.endswith("language_score.png") for p in res.stats.plots)

"""A FineWeb-like corpus for the data benchmarks, made from the docs sample in ../shared (which is
documentation, not FineWeb): ~3000-character pages cut from its texts, each document a page with
a third of its words replaced (so documents are distinct, as most web pages are), plus 10% near
copies of earlier documents (2% of the words changed) and 3% exact copies (case changed).

Two flavours:
- `dedup` (benchmarks/dedup_scale.py): the words of a page on one line, any word replaced by any
  word of the sample; the rows as the filter stage writes them (dedup's input).
- `pipeline` (benchmarks/data_scale.py): raw documents in FineWeb's columns for the whole
  pipeline, so the filters see pages as a crawl gives them: lines kept, only pages the filters
  keep as they are (prose: most of the sample's code listings fail the quality filters; the
  perturbed copies still fail some), alphabetic words replaced by alphabetic words, a url on one
  of a few hundred hosts, a language_score.
"""

from __future__ import annotations

import itertools
import random
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.filtering import KEPT_SCHEMA  # noqa: E402
from pipelines.sources import FINEWEB_SCHEMA  # noqa: E402

SAMPLES = REPO / ".." / "shared" / "data" / "docs-sample"
PAGE_CHARS = 3000
FLAVOURS = ("dedup", "pipeline")


def pages(lines: bool = False) -> list[list[list[str]]]:
    """~PAGE_CHARS-character pages of the sample, each a list of lines of words (with `lines`
    False, a page is one line: the words are cut wherever the page is full)."""
    out = []
    for f in sorted(SAMPLES.glob("snapshot-*/*.parquet")):
        for text in pq.read_table(f, columns=["text"])["text"].to_pylist():
            page, size = [], 0
            for line in text.split("\n") if lines else [text]:
                words = line.split()
                if lines:
                    page.append(words)
                    size += len(line) + 1
                else:
                    for w in words:
                        page.append(w)
                        size += len(w) + 1
                        if size >= PAGE_CHARS:
                            out.append([page])
                            page, size = [], 0
                    continue
                if size >= PAGE_CHARS:
                    out.append(page)
                    page, size = [], 0
    if not out:
        sys.exit(f"no docs sample under {SAMPLES}")
    return out


def _kept_by_the_filters(page: list[list[str]]) -> bool:
    from pipelines.filters import FilterConfig, apply_filters

    return apply_filters({"text": "\n".join(" ".join(line) for line in page), "id": "page"}, FilterConfig())[0]


def write_corpus(path: Path, n: int, seed: int = 0, flavour: str = "dedup") -> None:
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {', '.join(FLAVOURS)}, got {flavour!r}")
    pipeline = flavour == "pipeline"
    rng = random.Random(seed)
    base = pages(lines=pipeline)
    if pipeline:  # filtered as far as needed (a page takes a few ms): a small corpus is quick
        base = list(itertools.islice(filter(_kept_by_the_filters, base), max(n, 200)))
    replaceable = str.isalpha if pipeline else (lambda w: True)
    vocab = sorted({w for p in base[:200] for line in p for w in line if replaceable(w)})

    def changed(lines: list[list[str]], share: int) -> str:
        """The text of `lines` with one in `share` of its replaceable words replaced."""
        lines = [list(line) for line in lines]
        spots = [(a, b) for a, line in enumerate(lines) for b, w in enumerate(line) if replaceable(w)]
        for j in rng.sample(range(len(spots)), len(spots) // share):
            a, b = spots[j]
            lines[a][b] = rng.choice(vocab)
        return "\n".join(" ".join(line) for line in lines)

    made: list[str] = []  # a window of recent documents to copy from
    schema = FINEWEB_SCHEMA if pipeline else KEPT_SCHEMA
    writer = pq.ParquetWriter(path, schema, compression="zstd")
    rows: list[dict] = []
    for i in range(n):
        roll = rng.random()
        if made and roll < 0.03:
            text = rng.choice(made).upper()
        elif made and roll < 0.13:
            text = changed([line.split() for line in rng.choice(made).split("\n")], 50)
        else:
            text = changed(base[i % len(base)], 3)
        made.append(text)
        if len(made) > 2000:
            made.pop(rng.randrange(len(made)))
        row = {"text": text, "id": f"<urn:uuid:bench-{i:09d}>"}
        if pipeline:
            row.update(dump="CC-BENCH-2026", url=f"https://site{i * 7919 % 389}.example.org/page/{i}",
                       language="en", language_score=0.65 + 0.35 * ((i * 2654435761) % 1000) / 1000)
        else:
            row.update(source_file="bench.parquet", source_row=i)
        rows.append(row)
        if len(rows) == 1000:
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
            rows = []
    if rows:
        writer.write_table(pa.Table.from_pylist(rows, schema=schema))
    writer.close()

"""Small helpers that turn stage results into Dagster metadata (markdown tables, embedded PNGs)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Iterable, Mapping

from dagster import MetadataValue

from pipelines.orchestration.paths import REPO_ROOT

# Dagster stores metadata in its event log; an embedded plot larger than this is linked instead.
MAX_EMBED_BYTES = 400_000


def md_table(rows: Iterable[Mapping[str, Any]], columns: list[str] | None = None) -> str:
    rows = list(rows)
    if not rows:
        return "_(none)_"
    columns = columns or list(rows[0])
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        out.append("| " + " | ".join(str(row.get(c, "")).replace("|", "\\|") for c in columns) + " |")
    return "\n".join(out)


def counts_table(counts: Mapping[str, int], key: str = "rule", value: str = "documents") -> str:
    rows = [{key: k, value: v} for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    return md_table(rows, [key, value])


def png_markdown(paths: Iterable[str | os.PathLike], title: str | None = None) -> MetadataValue:
    """PNG plots embedded in markdown as data URIs (the Dagster UI shows them inline)."""
    parts = [f"### {title}"] if title else []
    for path in paths:
        path = Path(path)
        data = path.read_bytes()
        if len(data) <= MAX_EMBED_BYTES:
            b64 = base64.b64encode(data).decode("ascii")
            parts.append(f"**{path.stem}**\n\n![{path.stem}](data:image/png;base64,{b64})")
        else:
            parts.append(f"**{path.stem}**: `{path}`")
    return MetadataValue.md("\n\n".join(parts))


def json_md(obj: Any) -> MetadataValue:
    return MetadataValue.md("```json\n" + json.dumps(obj, indent=2, default=str) + "\n```")


def hash_strings(values: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for v in values:
        digest.update(str(v).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def git_commit() -> str:
    """The project's commit (with "-dirty" if the tree has changes), or "unknown" outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"

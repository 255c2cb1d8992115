"""The embedded default snapshot: English text that every machine with the project installed has.

The main job must run with no network, so it cannot fetch FineWeb. It trains instead on the
documentation that ships inside the installed Python environment:
  * the interpreter's help topics (`pydoc_data.topics`, the text `help("if")` prints), and
  * the docstrings of modules, classes and functions of the standard library and the installed
    packages, read from their source files (nothing is imported, so no package code runs).
Each module becomes one document, written in FineWeb's parquet schema with `dump` set to
"local-python-docstrings" and `url` "pydoc://<module>" so nobody mistakes it for FineWeb. The
walk is sorted and the text capped, so a given environment always yields the same bytes.
No third-party text is stored in the repository: it is built on the user's machine.

    python -m pipelines.orchestration.default_snapshot OUT_DIR [--max-chars 6000000]
"""

from __future__ import annotations

import argparse
import inspect
import hashlib
import json
import os
import re
import sys
import sysconfig
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.sources import FINEWEB_SCHEMA

DUMP = "local-python-docstrings"
# A fixed date: the text's age is the environment's, and a timestamp would break determinism.
DATE = "1970-01-01T00:00:00Z"
DEFAULT_MAX_CHARS = 4_000_000
MIN_DOC_CHARS = 400
_MAX_FILE_BYTES = 400_000
_FILE_NAME = "python-docstrings.parquet"
_NAMESPACE = uuid.UUID("5b1d0c0e-8f0a-4c53-9a53-6f8b1f3a2b10")
# Test suites and vendored copies repeat or pad text; private modules have thin docs.
_SKIP_DIR = re.compile(r"(^|/)(tests?|testing|_vendor|vendor|idlelib|lib2to3|site-packages/pip)(/|$)")
_DOCSTRING = re.compile(r'^[ \t]*[rRuU]?("""|\'\'\')(.*?)\1', re.MULTILINE | re.DOTALL)
_TOKEN = re.compile(r"\w+|[^\w\s]")
_DOCTEST = re.compile(r"^\s*(>>>|\.\.\.)( |$)")

SCHEMA = FINEWEB_SCHEMA  # the default snapshot is written exactly in FineWeb's schema


def _is_prose(paragraph: str) -> bool:
    """A paragraph of sentences, not a code block, signature, table or parameter list."""
    lines = paragraph.splitlines()
    if any(line.startswith(("    ", "\t")) or _DOCTEST.match(line) for line in lines):
        return False  # indented: a code block or a parameter description list
    words = paragraph.split()
    if len(words) < 8 or "{" in paragraph or "`" in paragraph:
        return False
    # Punctuation counts as words here, as in the Gopher filter's alphabetic-word ratio.
    tokens = _TOKEN.findall(paragraph)
    alpha = sum(1 for t in tokens if any(c.isalpha() for c in t))
    return alpha / len(tokens) >= 0.85 and paragraph.rstrip()[-1] in ".!?:"


def _clean(doc: str) -> str:
    """The prose of a docstring: its paragraphs that read as sentences, re-flowed."""
    paragraphs = re.split(r"\n\s*\n", doc.strip())
    return "\n\n".join(" ".join(p.split()) for p in paragraphs if _is_prose(p))


def module_document(source: str) -> str | None:
    """The prose of the docstrings in one module's source, in reading order, as one document.

    Docstrings are found with a regex for triple-quoted strings that open a line (module, class
    and function docstrings, plus the odd multi-line literal, which the prose test then drops):
    reading a few thousand files this way takes seconds, where ast.parse took over a minute."""
    parts: list[str] = []
    for match in _DOCSTRING.finditer(source):
        body = match.group(2)
        if "\\" in body[:200] and "\\n" in body:  # escaped text: a template, not a docstring
            continue
        text = _clean(inspect.cleandoc(body))
        if text and text not in parts:
            parts.append(text)
    text = "\n\n".join(parts)
    return text if len(text) >= MIN_DOC_CHARS else None


def _module_files(root: Path, skip_site_packages: bool) -> list[tuple[str, Path]]:
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if skip_site_packages and ("site-packages/" in rel or "dist-packages/" in rel):
            continue
        if _SKIP_DIR.search(rel) or any(part.startswith(("_", ".")) and part != "__init__.py"
                                        for part in rel.split("/")):
            continue
        if not all(p.isidentifier() for p in rel[:-3].split("/")):
            continue
        module = rel[:-3].replace("/", ".")
        if module.endswith(".__init__"):
            module = module[: -len(".__init__")]
        found.append((module, path))
    return found


def _sources() -> list[tuple[str, str, str]]:
    """(name, kind, root) sources in a fixed order: help topics, stdlib, then installed packages."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    purelib = Path(sysconfig.get_paths()["purelib"])
    return [("stdlib", "stdlib", str(stdlib)), ("site-packages", "site", str(purelib))]


def iter_documents(max_chars: int):
    """Yield (url, file_path, text) until max_chars of text were produced."""
    total = 0
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip pydoc_data
        topics = {}
    for name in sorted(topics):
        text = _clean(topics[name])  # the prose paragraphs; grammar rules and examples dropped
        if len(text) < MIN_DOC_CHARS:
            continue
        yield f"pydoc://topics/{name}", f"pydoc_data/topics.py#{name}", text
        total += len(text)
        if total >= max_chars:
            return
    seen: set[str] = set()
    for _, kind, root in _sources():
        for module, path in _module_files(Path(root), skip_site_packages=kind == "stdlib"):
            if module in seen:
                continue
            seen.add(module)
            try:
                if path.stat().st_size > _MAX_FILE_BYTES:  # generated tables, not prose
                    continue
                source = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            text = module_document(source)
            if text is None:
                continue
            text = f"Module {module}.\n\n{text}"
            yield f"pydoc://{module}", f"{kind}:{path.relative_to(root).as_posix()}", text
            total += len(text)
            if total >= max_chars:
                return


def build_default_snapshot(out_dir: str | os.PathLike, max_chars: int = DEFAULT_MAX_CHARS) -> Path:
    """Write the snapshot as one parquet file under out_dir (atomically); returns out_dir.

    Rebuilding in the same environment gives byte-identical text; the directory is left as it
    is when its recorded fingerprint already matches, so the Dagster partition stays unchanged."""
    from model.tokenizer import get_encoding

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = {name: [] for name in SCHEMA.names}
    enc = get_encoding()
    digest = hashlib.sha256()
    for url, file_path, text in iter_documents(max_chars):
        digest.update(text.encode("utf-8", "surrogatepass"))
        rows["text"].append(text)
        rows["id"].append(f"<urn:uuid:{uuid.uuid5(_NAMESPACE, url)}>")
        rows["dump"].append(DUMP)
        rows["url"].append(url)
        rows["date"].append(DATE)
        rows["file_path"].append(file_path)
        rows["language"].append("en")
        rows["language_score"].append(None)
        rows["token_count"].append(len(enc.encode_ordinary(text)))
    fingerprint = digest.hexdigest()
    info_path = out / "SNAPSHOT.json"
    target = out / _FILE_NAME
    if target.exists() and info_path.exists():
        if json.loads(info_path.read_text()).get("text_sha256") == fingerprint:
            return out
    table = pa.table(rows, schema=SCHEMA)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, target)
    info = {
        "what": "Docstrings and help topics of the local Python environment (NOT FineWeb)",
        "dump": DUMP,
        "python": sys.version.split()[0],
        "documents": table.num_rows,
        "characters": sum(len(t) for t in rows["text"]),
        "tokens": int(sum(rows["token_count"])),
        "text_sha256": fingerprint,
    }
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--max-chars", type=int, default=DEFAULT_MAX_CHARS)
    args = parser.parse_args(argv)
    out = build_default_snapshot(args.out_dir, args.max_chars)
    print((out / "SNAPSHOT.json").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

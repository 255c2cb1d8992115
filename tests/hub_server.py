"""A local server that speaks the parts of the Hugging Face hub's HTTP API that huggingface_hub
and `datasets` use to read a dataset repository, for tests (the real hub is not reachable here).

It serves one dataset repository laid out like FineWeb (sample/10BT/*.parquet, a README whose
YAML front matter declares the configs) with git-like revisions: `main` points at the newest
commit, and every commit stays readable by its sha. Faults can be queued to test the client:
a connection dropped after N bytes of a file, a 5xx answer, bytes that differ from the announced
sha256. Every request is logged (method, path, Range header, status) for the tests to inspect.

Endpoints (as the hub answers them):
    GET  /api/datasets/{repo}[/revision/{rev}][?blobs=true]  dataset info: sha, siblings
    GET  /api/datasets/{repo}/tree/{rev}[/{path}][?recursive=true]  files of a folder
    POST /api/datasets/{repo}/paths-info/{rev}                 files and folders of given paths
    HEAD|GET /datasets/{repo}/resolve/{rev}/{path}               the file; ETag, X-Repo-Commit,
         X-Linked-Etag, X-Linked-Size, Content-Length, Range (206)
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

# The README the hub shows for FineWeb declares its configs this way; `datasets` reads it.
README = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/*/*
{configs}---
# A FineWeb-shaped test repository
"""


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Fault:
    """One failure served once to the first request that matches (method and path suffix)."""

    kind: str  # "drop" (close after `after_bytes` of the body), "status" (answer `status`), "corrupt"
    path: str  # repository path of the file, or "info" for the dataset info endpoint
    method: str = "GET"
    after_bytes: int = 0
    status: int = 503
    times: int = 1


@dataclass
class Commit:
    sha: str
    files: dict[str, bytes]


@dataclass
class HubRepo:
    repo_id: str
    commits: list[Commit] = field(default_factory=list)

    def commit(self, files: dict[str, bytes]) -> str:
        """A new commit on `main` with these files added or replaced; returns its sha."""
        tree = dict(self.commits[-1].files) if self.commits else {}
        tree.update(files)
        configs = sorted({p.split("/")[1] for p in tree if p.startswith("sample/")})
        tree["README.md"] = README.format(configs="".join(
            f"- config_name: sample-{c}\n  data_files:\n  - split: train\n    path: sample/{c}/*\n"
            for c in configs)).encode()
        parent = self.commits[-1].sha if self.commits else ""
        digest = hashlib.sha1(parent.encode())
        for path in sorted(tree):
            digest.update(path.encode() + b"\0" + hashlib.sha256(tree[path]).digest())
        self.commits.append(Commit(digest.hexdigest(), tree))
        return self.commits[-1].sha

    def at(self, rev: str) -> Commit | None:
        if rev == "main" and self.commits:
            return self.commits[-1]
        return next((c for c in self.commits if c.sha == rev), None)


def _is_lfs(path: str) -> bool:
    return path.endswith(".parquet")


def _entry(path: str, data: bytes) -> dict:
    """A file as the tree and paths-info endpoints describe it."""
    out = {"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": path}
    if _is_lfs(path):
        out["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
    return out


def _sibling(path: str, data: bytes, blobs: bool) -> dict:
    out = {"rfilename": path}
    if blobs:
        out.update(size=len(data), blobId=git_blob_sha1(data))
        if _is_lfs(path):
            out["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
    return out


class HubServer:
    """`with HubServer(repo) as hub:` serves on 127.0.0.1, a free port; `hub.endpoint` is the URL."""

    def __init__(self, repo: HubRepo):
        self.repo = repo
        self.faults: list[Fault] = []
        self.log: list[dict] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> "HubServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    def fault(self, **kwargs) -> Fault:
        f = Fault(**kwargs)
        with self._lock:
            self.faults.append(f)
        return f

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for f in self.faults:
                if f.times > 0 and f.method == method and f.path == path:
                    f.times -= 1
                    return f
        return None

    def requests(self, method: str | None = None, contains: str = "") -> list[dict]:
        with self._lock:
            return [r for r in self.log if (method is None or r["method"] == method) and contains in r["path"]]


def _handler(server: HubServer):
    repo_prefix = f"/api/datasets/{server.repo.repo_id}"
    resolve_prefix = f"/datasets/{server.repo.repo_id}/resolve/"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # the log list replaces stderr noise
            pass

        def _record(self, status: int) -> None:
            with server._lock:
                server.log.append({"method": self.command, "path": unquote(urlsplit(self.path).path),
                                   "range": self.headers.get("Range"), "status": status})

        def _send(self, status: int, body: bytes = b"", headers: dict | None = None,
                  content_type: str = "application/json") -> None:
            self._record(status)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, obj, headers: dict | None = None) -> None:
            self._send(200, json.dumps(obj).encode(), headers)

        def _error(self, status: int, code: str, message: str, commit: str | None = None) -> None:
            headers = {"X-Error-Code": code, "X-Error-Message": message}
            if commit:
                headers["X-Repo-Commit"] = commit
            self._send(status, json.dumps({"error": message}).encode(), headers)

        def do_HEAD(self) -> None:
            self._route()

        def do_GET(self) -> None:
            self._route()

        def do_POST(self) -> None:
            self._route()

        def _route(self) -> None:
            url = urlsplit(self.path)
            path, query = unquote(url.path), parse_qs(url.query)
            if path.startswith(resolve_prefix):
                rev, _, file = path[len(resolve_prefix):].partition("/")
                return self._resolve(rev, file)
            if path == repo_prefix or path.startswith(repo_prefix + "/revision/"):
                rev = path[len(repo_prefix + "/revision/"):] if "/revision/" in path else "main"
                return self._info(rev, query.get("blobs", ["false"])[0].lower() == "true")
            m = re.fullmatch(re.escape(repo_prefix) + r"/tree/([^/]+)/?(.*)", path)
            if m:
                return self._tree(m.group(1), m.group(2).strip("/"),
                                  query.get("recursive", ["false"])[0].lower() == "true")
            m = re.fullmatch(re.escape(repo_prefix) + r"/paths-info/([^/]+)", path)
            if m and self.command == "POST":
                return self._paths_info(m.group(1))
            if path.startswith("/api/datasets/"):
                return self._error(404, "RepoNotFound", "Repository not found")
            return self._error(404, "EntryNotFound", f"no route for {path}")

        def _commit_or_404(self, rev: str) -> Commit | None:
            commit = server.repo.at(rev)
            if commit is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return commit

        def _info(self, rev: str, blobs: bool) -> None:
            fault = server.take_fault(self.command, "info")
            if fault and fault.kind == "status":
                return self._error(fault.status, "", f"injected {fault.status}")
            commit = self._commit_or_404(rev)
            if commit is None:
                return
            self._json({"_id": "0" * 24, "id": server.repo.repo_id, "author": server.repo.repo_id.split("/")[0],
                        "sha": commit.sha, "private": False, "gated": False, "disabled": False,
                        "lastModified": "2026-11-01T00:00:00.000Z", "tags": [], "downloads": 0, "likes": 0,
                        "cardData": {}, "siblings": [_sibling(p, d, blobs) for p, d in sorted(commit.files.items())]})

        def _tree(self, rev: str, folder: str, recursive: bool) -> None:
            commit = self._commit_or_404(rev)
            if commit is None:
                return
            prefix = folder + "/" if folder else ""
            out, dirs = [], set()
            for p, d in sorted(commit.files.items()):
                if not p.startswith(prefix):
                    continue
                rest = p[len(prefix):].split("/")
                if len(rest) == 1 or recursive:
                    out.append(_entry(p, d))
                for i in range(1, len(rest) if recursive else min(2, len(rest))):
                    dirs.add(prefix + "/".join(rest[:i]))
            if folder and not out and not dirs:
                return self._error(404, "EntryNotFound", f"{folder} does not exist at {rev}", commit.sha)
            out += [{"type": "directory", "oid": hashlib.sha1(p.encode()).hexdigest(), "size": 0, "path": p}
                    for p in sorted(dirs)]
            self._json(out)

        def _paths_info(self, rev: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode()
            if self.headers.get("Content-Type", "").startswith("application/json"):
                paths = json.loads(raw or "{}").get("paths", [])
            else:
                paths = parse_qs(raw).get("paths", [])
            commit = self._commit_or_404(rev)
            if commit is None:
                return
            out = []
            for p in paths:
                p = p.strip("/")
                if p in commit.files:
                    out.append(_entry(p, commit.files[p]))
                elif any(f.startswith(p + "/") for f in commit.files) or p == "":
                    out.append({"type": "directory", "oid": hashlib.sha1(p.encode()).hexdigest(), "size": 0, "path": p})
            self._json(out)

        def _resolve(self, rev: str, file: str) -> None:
            fault = server.take_fault(self.command, file)
            if fault and fault.kind == "status":
                return self._error(fault.status, "", f"injected {fault.status}")
            commit = self._commit_or_404(rev)
            if commit is None:
                return
            if file not in commit.files:
                return self._error(404, "EntryNotFound", f"{file} does not exist at {rev}", commit.sha)
            data = commit.files[file]
            etag = hashlib.sha256(data).hexdigest() if _is_lfs(file) else git_blob_sha1(data)
            headers = {"ETag": f'"{etag}"', "X-Repo-Commit": commit.sha, "Accept-Ranges": "bytes"}
            if _is_lfs(file):  # the hub names an LFS file by its sha256 and size in these
                headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))})
            body, status = data, 200
            if fault and fault.kind == "corrupt":  # same length, different bytes
                body = bytes(b ^ 0xFF for b in data[:64]) + data[64:]
            rng = self.headers.get("Range")
            if rng and self.command == "GET":
                m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
                if not m or int(m.group(1)) >= len(data):
                    return self._error(416, "", f"bad range {rng}")
                start = int(m.group(1))
                end = int(m.group(2)) if m.group(2) else len(data) - 1
                end = min(end, len(data) - 1)
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                body, status = body[start:end + 1], 206
            if fault and fault.kind == "drop" and self.command == "GET":
                # Announce the whole length, send part of it, hang up: a connection cut mid-file.
                self._record(status)
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body[:fault.after_bytes])
                self.wfile.flush()
                self.close_connection = True
                return
            self._send(status, body, headers, "application/octet-stream")

    return Handler


SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "docs-sample" / "snapshot-2026-11-a"
# Repository paths and how many sample documents each holds (the sample is documentation text
# in FineWeb's schema, not FineWeb).
HUB_FILES = {"sample/10BT/000_00000.parquet": 40, "sample/10BT/001_00000.parquet": 40,
             "data/CC-MAIN-2024-10/000_00000.parquet": 10}


def sample_rows(n: int, offset: int = 0) -> list[dict]:
    import pyarrow.parquet as pq
    import pytest

    if not SAMPLE.is_dir():
        pytest.skip(f"docs sample not found at {SAMPLE} (CI keeps ../shared beside the repo)")
    rows: list[dict] = []
    for f in sorted(SAMPLE.glob("*.parquet")):
        rows += pq.read_table(f).to_pylist()
    return rows[offset:offset + n]


def fineweb_shaped_repo(repo_id: str = "HuggingFaceFW/fineweb") -> HubRepo:
    """One commit of HUB_FILES, each a different slice of the sample."""
    files, offset = {}, 0
    for path, n in HUB_FILES.items():
        files[path] = fineweb_shaped_parquet(sample_rows(n, offset))
        offset += n
    repo = HubRepo(repo_id)
    repo.commit(files)
    return repo


def unreachable_endpoint() -> str:
    """The URL of a port on 127.0.0.1 that nothing listens on (a hub that cannot be reached)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def fineweb_shaped_parquet(rows: list[dict]) -> bytes:
    """Parquet bytes with FineWeb's columns (row groups of 8 rows, so readers can seek)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.sources import FINEWEB_SCHEMA

    table = pa.Table.from_pylist([{k: r.get(k) for k in FINEWEB_SCHEMA.names} for r in rows], schema=FINEWEB_SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=8)
    return buf.getvalue()

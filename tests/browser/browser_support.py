"""Helpers of the real-browser tests: Playwright's Python package drives Debian's Chromium (/usr/bin/chromium).

Servers (hgpt ui, mlflow ui) are started by the tests on free ports of 127.0.0.1, each in a
session of its own; teardown stops the whole session (SIGTERM, then SIGKILL) and asserts that no
process of it is left. A failing test leaves a screenshot under $HGPT_TEST_ARTIFACTS
(default workspace/test-artifacts).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("HGPT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(os.environ.get("HGPT_TEST_ARTIFACTS") or REPO / "workspace" / "test-artifacts")


def browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install playwright)"
    if not Path(CHROMIUM).exists():
        return f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session_members(sid: int) -> list[int]:
    import psutil

    out = []
    for p in psutil.process_iter(["pid", "status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and os.getsid(p.info["pid"]) == sid:
                out.append(p.info["pid"])
        except (ProcessLookupError, PermissionError, psutil.Error):
            pass
    return out


class Server:
    """A server process in its own session, stopped as a whole."""

    def __init__(self, cmd: list[str], env: dict, log: Path, url: str):
        self.url, self.log = url, log
        self._log = open(log, "w")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.sid = self.proc.pid  # start_new_session: the child leads its own session

    def wait_http(self, path: str, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + path, timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(1)
        raise TimeoutError(f"{self.url}{path} not up after {timeout}s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> list[int]:
        """SIGTERM the session, SIGKILL what is left after 15 s; returns pids still alive."""
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            for pid in _session_members(self.sid):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.time() + wait
            while time.time() < deadline and _session_members(self.sid):
                self.proc.poll()
                time.sleep(0.3)
            if not _session_members(self.sid):
                break
        self.proc.poll()
        self._log.close()
        return _session_members(self.sid)


def listening_addresses(pid_sid: int) -> set[str]:
    """IP addresses the session's processes listen on."""
    import psutil

    addrs = set()
    members = set(_session_members(pid_sid))
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in members:
            addrs.add(conn.laddr.ip)
    return addrs

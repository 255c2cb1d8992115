"""A benchmark's child process measured as a whole tree: peak resident memory summed over the
child and every process under it (pool workers, a Ray cluster it started), sampled every 50 ms,
and the CPU time of the processes it waited for."""

from __future__ import annotations

import resource
import subprocess
import threading
import time

import psutil


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:  # it has just exited
        return 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_measured(cmd: list[str], cwd) -> tuple[int, str, int, float]:
    """Run `cmd`: (exit code, its stdout, peak RSS of its tree in bytes, CPU seconds). The CPU
    time counts the child and the workers it waited for: docs per CPU-second is the per-core
    rate even when other work shares the cores (wall time then says little)."""
    cpu0 = _children_cpu()
    child = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, text=True)
    proc = psutil.Process(child.pid)
    peak = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss(proc))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    stdout, _ = child.communicate()
    done.set()
    watcher.join()
    return child.returncode, stdout, peak, _children_cpu() - cpu0

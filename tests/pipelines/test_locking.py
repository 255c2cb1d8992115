import os
import signal
import subprocess
import sys
import time

import pytest

from pipelines.locking import LockHeld, exclusive_lock, is_locked

_HOLD = """
import sys, time
from pipelines.locking import exclusive_lock
with exclusive_lock(sys.argv[1], what="the test resource"):
    print("held", flush=True)
    time.sleep(60)
"""


def _holder(lock):
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(lock)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_writer_is_refused_with_the_holder_named(tmp_path):
    lock = tmp_path / "run" / ".lock"
    proc = _holder(lock)
    try:
        assert is_locked(lock)
        with pytest.raises(LockHeld) as err:
            with exclusive_lock(lock, what="training run x"):
                pass
        msg = str(err.value)
        assert "training run x" in msg and f"pid {proc.pid}" in msg and str(lock) in msg
        assert "since 20" in msg
    finally:
        proc.kill()
        proc.wait()


def test_lock_of_a_killed_process_is_taken_over_at_once(tmp_path):
    lock = tmp_path / ".lock"
    proc = _holder(lock)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not is_locked(lock)
    start = time.monotonic()
    with exclusive_lock(lock):
        assert is_locked(lock)
    assert time.monotonic() - start < 5
    assert not is_locked(lock)


def test_same_process_cannot_take_the_lock_twice(tmp_path):
    lock = tmp_path / ".lock"
    with exclusive_lock(lock):
        with pytest.raises(LockHeld):
            with exclusive_lock(lock):
                pass
    with exclusive_lock(lock):  # released on exit, even after a refused attempt
        pass

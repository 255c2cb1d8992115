"""training.launch: torchrun on one node whose stores listen on 127.0.0.1 only."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from training.launch import main

REPO = Path(__file__).resolve().parents[2]

WORKER = """
import os, time, sys
import torch.distributed as dist
dist.init_process_group("gloo")
dist.barrier()
open(os.path.join(sys.argv[1], f"up-{dist.get_rank()}"), "w").close()
while not os.path.exists(os.path.join(sys.argv[1], "stop")):
    time.sleep(0.1)
dist.barrier()
dist.destroy_process_group()
"""


def _listening(proc: psutil.Process) -> list[tuple[str, int]]:
    found = []
    for p in [proc, *proc.children(recursive=True)]:
        try:
            found += [c.laddr for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        except psutil.NoSuchProcess:
            pass
    return found


@pytest.mark.slow
def test_two_processes_rendezvous_with_every_listener_on_loopback(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "training.launch", "--nproc-per-node", "2",
                             str(script), str(tmp_path)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while not all((tmp_path / f"up-{r}").exists() for r in (0, 1)):
            assert proc.poll() is None, proc.stdout.read()
            assert time.time() < deadline, "the two ranks did not rendezvous"
            time.sleep(0.2)
        listening = _listening(psutil.Process(proc.pid))
        # the rendezvous store and the agent store (torchrun's process), gloo in each rank
        assert len(listening) >= 2, listening
        assert all(addr.ip == "127.0.0.1" for addr in listening), listening
        (tmp_path / "stop").touch()
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
    finally:
        if proc.poll() is None:
            proc.kill()


def test_multi_node_arguments_are_refused_with_a_pointer_to_torchrun():
    for args in (["--nnodes", "2"], ["--rdzv-endpoint=10.0.0.1:29400"], ["--master-addr", "x"]):
        with pytest.raises(SystemExit, match="across nodes run torchrun"):
            main([*args, "--nproc-per-node", "2", "-m", "training"])

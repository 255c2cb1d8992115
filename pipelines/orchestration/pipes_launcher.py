"""Run training as a Dagster Pipes subprocess under torchrun, and end its whole process tree on cancel.

Dagster's `PipesSubprocessClient` sends one SIGINT to its direct child and waits; but torchrun
starts each worker in a session of its own, so a signal to torchrun's process group never reaches
them, and a torchrun that is itself killed leaves its workers running. This launcher therefore:
  1. starts the command in a new session and asks the kernel to SIGTERM it if the Dagster step
     process dies (PR_SET_PDEATHSIG), so a kill -9'd run worker does not leave training behind;
  2. on cancellation sends SIGINT to the child (torchrun forwards it to every worker, each of
     which stops between steps), waits `grace_s`, then SIGTERM and SIGKILL to every process of
     the tree it has seen (tracked with psutil while it runs, since the workers are not in our
     process group), and only then lets the interruption propagate.

    launcher = TrainingLauncher(nproc_per_node=2)
    invocation = launcher.run(context=context, extras={...}, module="pipelines.orchestration.train_entry")
    return invocation.get_materialize_result()
"""


import ctypes
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
from dagster import (
    ConfigurableResource,
    PipesClientCompletedInvocation,
    PipesTempFileContextInjector,
    PipesTempFileMessageReader,
    open_pipes_session,
)
from dagster._core.errors import DagsterPipesExecutionError  # not re-exported at top level
from pydantic import Field

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not Linux: cancellation still works, only kill -9 of Dagster orphans it
        pass


def living(procs) -> list[psutil.Process]:
    """The processes of `procs` still running (a zombie has exited: it only awaits reaping)."""
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


class ProcessTree:
    """Every pid that ever appeared below `root`, so none is missed when parents die first."""

    def __init__(self, root: subprocess.Popen):
        self.root = root
        self.seen: dict[int, psutil.Process] = {}
        self._lock = threading.Lock()
        self.refresh()

    def refresh(self) -> None:
        try:
            proc = psutil.Process(self.root.pid)
            procs = [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        with self._lock:
            for p in procs:
                self.seen.setdefault(p.pid, p)

    def alive(self) -> list[psutil.Process]:
        self.refresh()
        with self._lock:
            procs = list(self.seen.values())
        return living(procs)

    def signal_all(self, sig: int) -> None:
        for p in self.alive():
            try:
                p.send_signal(sig)
            except psutil.NoSuchProcess:
                pass

    def wait_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.root.poll()  # reap our direct child so it does not linger as a zombie
            if not self.alive():
                return True
            time.sleep(0.2)
        self.root.poll()
        return not self.alive()


def stop_tree(tree: ProcessTree, grace_s: float, log=None) -> None:
    """SIGINT the root (torchrun forwards it), then SIGTERM, then SIGKILL whatever is left."""
    say = log or (lambda msg: None)
    if tree.root.poll() is None:
        say(f"sending SIGINT to training process {tree.root.pid}")
        tree.root.send_signal(signal.SIGINT)
    if tree.wait_gone(grace_s):
        return
    say(f"{len(tree.alive())} training process(es) still running after {grace_s:.0f}s: SIGTERM")
    tree.signal_all(signal.SIGTERM)
    if tree.wait_gone(5):
        return
    say("escalating to SIGKILL")
    tree.signal_all(signal.SIGKILL)
    tree.wait_gone(5)


class _SingleWriterTempFileReader(PipesTempFileMessageReader):
    """Dagster's temp-file reader, stating that one process writes to it (rank 0 alone opens
    the Pipes channel). The base property is marked preview and warns each time Dagster's
    message handler reads it, on every training run, about a feature we do not use."""

    @property
    def expected_writer_count(self) -> int:
        return 1


class TrainingLauncher(ConfigurableResource):
    """How the training subprocess is started: torchrun with N processes per node (or plain python)."""

    nproc_per_node: int = Field(default=1, description="Processes (GPUs) per node for torchrun.")
    nnodes: int = Field(default=1, description="Nodes; >1 needs rdzv_endpoint on each node.")
    rdzv_endpoint: str | None = Field(default=None, description="host:port of the rendezvous.")
    use_torchrun: bool = Field(
        default=True, description="Start under torchrun (false: plain `python -m`, one process)."
    )
    grace_s: float = Field(
        default=15.0, description="Seconds a cancelled run gets to stop before SIGTERM/SIGKILL."
    )

    def command(self, module: str, args: list[str] | None = None) -> list[str]:
        args = list(args or [])
        if not self.use_torchrun:
            return [sys.executable, "-m", module, *args]
        nproc = f"--nproc-per-node={self.nproc_per_node}"
        if self.nnodes > 1:
            if not self.rdzv_endpoint:
                raise ValueError("TrainingLauncher: nnodes > 1 needs rdzv_endpoint (host:port)")
            cmd = [sys.executable, "-m", "torch.distributed.run", nproc, f"--nnodes={self.nnodes}",
                   "--rdzv-backend=c10d", f"--rdzv-endpoint={self.rdzv_endpoint}"]
        else:  # torchrun with its stores listening on 127.0.0.1 only (see training/launch.py)
            cmd = [sys.executable, "-m", "training.launch", nproc]
        return [*cmd, "-m", module, *args]

    def run(self, *, context, extras: dict, module: str, args: list[str] | None = None,
            env: dict[str, str] | None = None):
        cmd = self.command(module, args)
        context.log.info("starting: " + " ".join(cmd))
        with open_pipes_session(
            # The op context of the asset's step: Dagster's Pipes reads `run_id` from the context
            # it is given, which on an AssetExecutionContext is deprecated (and warns each run).
            context=getattr(context, "op_execution_context", context),
            context_injector=PipesTempFileContextInjector(),
            message_reader=_SingleWriterTempFileReader(),
            extras=extras,
        ) as session:
            proc = subprocess.Popen(
                cmd,
                env={**os.environ, **(env or {}), **session.get_bootstrap_env_vars()},
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
            tree = ProcessTree(proc)
            try:
                while proc.poll() is None:
                    tree.refresh()
                    try:
                        proc.wait(timeout=1.0)
                    except subprocess.TimeoutExpired:
                        pass
            except BaseException:  # cancelled (DagsterExecutionInterruptedError), or anything else
                context.log.warning("training interrupted: stopping its process tree")
                stop_tree(tree, self.grace_s, context.log.info)
                raise
            # Normal exit of the root: no worker may outlive it.
            if tree.alive():
                stop_tree(tree, 2.0, context.log.info)
            if proc.returncode != 0:
                raise DagsterPipesExecutionError(
                    f"training process exited with code {proc.returncode}"
                )
        return PipesClientCompletedInvocation(session)

"""`hgpt run`, `hgpt ui`, `hgpt mlflow-ui`: the main job and the two UIs, on 127.0.0.1 only.

    hgpt run [--source default|local|hub] [--input DIR] [--preset tiny|gpt2] [--max-steps N]
    hgpt ui [--port 3000]            # Dagster UI over workspace/dagster (asset graph, runs, checks):
                                     # dagster-webserver and dagster-daemon, as `dagster dev` would
    hgpt mlflow-ui [--port 5000]     # MLflow UI over workspace/mlflow

Exit codes of `hgpt run`: 0 done (or up to date); 1 a step of the job failed (the run id names
it in the Dagster UI); 2 a user error, one line saying what and where: a missing or unreadable
input, a bad argument, or another `hgpt run` holding the workspace (its lock, pid, host, since).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys


def _workspace(args) -> None:
    if getattr(args, "workspace", None):
        os.environ["HGPT_WORKSPACE"] = os.path.abspath(args.workspace)


def _run(args) -> int:
    _workspace(args)
    from pipelines.orchestration.main_job import run_main

    return run_main(source=args.source, input_dir=args.input, hub_config=args.hub_config,
                    hub_max_files=args.hub_max_files, preset=args.preset, max_steps=args.max_steps,
                    nproc_per_node=args.nproc_per_node, force=args.force, limit_docs=args.limit_docs,
                    default_max_chars=args.default_max_chars, val_fraction=args.val_fraction)


def dagster_ui_commands(port: int, host: str = "127.0.0.1") -> list[list[str]]:
    """The Dagster UI as its two services: the webserver, and the daemon that runs schedules,
    sensors, the run queue and auto-materialization.

    That is what `dagster dev` starts, but `dagster dev` now warns that it is superseded by
    `dg dev` (package dagster-dg-cli). `dg dev` in turn only calls the same implementation, and
    dagster-dg-cli pins a dagster one patch release behind ours, so it cannot be installed
    beside it. `dagster-webserver` and `dagster-daemon run` are Dagster's own commands for
    running these services (as a deployment does), neither superseded nor deprecated."""
    from pipelines.orchestration.paths import REPO_ROOT

    workspace = ["-w", str(REPO_ROOT / "workspace.yaml")]
    return [[sys.executable, "-m", "dagster_webserver", *workspace, "-h", host, "-p", str(port)],
            [sys.executable, "-m", "dagster._daemon", "run", *workspace]]


def mlflow_ui_command(port: int, host: str = "127.0.0.1") -> list[str]:
    from pipelines.orchestration.mlflow_resource import default_tracking_uri

    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", default_tracking_uri(),
            "--host", host, "--port", str(port)]


def _die_with_parent() -> None:
    """In the server's process, before exec: SIGTERM when its parent (this CLI) dies, even by
    kill -9. Linux only (prctl); elsewhere the server outlives a killed CLI."""
    import ctypes
    import signal

    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the CLI died before the death signal was armed
        os.kill(os.getpid(), signal.SIGTERM)


def _supervise(*cmds: list[str]) -> int:
    """Run servers as this process's children and wait for them; when one ends, the others are
    stopped, and its exit code is ours. Not an exec: a kill -9 of the process the user started
    must not leave the servers, and what they started, holding the ports. Each child gets
    SIGTERM when this process dies (`_die_with_parent`). SIGTERM and SIGHUP sent here are passed
    on; Ctrl-C reaches the children directly (same process group), so it is ignored here rather
    than forwarded twice."""
    import signal
    import subprocess
    import time

    procs = []
    for cmd in cmds:
        print(" ".join(cmd), flush=True)
        procs.append(subprocess.Popen(cmd, preexec_fn=_die_with_parent))

    def stop_all(*_args):
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)

    for signo in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signo, stop_all)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # after the fork: the children keep their default
    while all(proc.poll() is None for proc in procs):
        time.sleep(0.2)
    rc = next(proc.returncode for proc in procs if proc.returncode is not None)
    stop_all()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return 128 - rc if rc < 0 else rc  # a signal's death as a shell reports it


def _ui(args) -> int:
    _workspace(args)
    from pipelines.orchestration.paths import ensure_dagster_home, get_instance

    ensure_dagster_home()  # sets DAGSTER_HOME for the server
    get_instance().dispose()  # storage created once, under the lock, before the server's processes start
    return _supervise(*dagster_ui_commands(args.port))


def _mlflow_ui(args) -> int:
    _workspace(args)
    from pipelines.orchestration.paths import Workspace

    Workspace.default().mlflow_dir.mkdir(parents=True, exist_ok=True)
    return _supervise(mlflow_ui_command(args.port))


def register(subparsers) -> None:
    p = subparsers.add_parser("run", help="run the whole asset graph headless (main job)",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", choices=("default", "local", "hub"), default="default",
                   help="default: the embedded snapshot built from installed Python docs (no network); "
                   "local: a directory of FineWeb files (--input); hub: FineWeb from the Hugging Face hub")
    p.add_argument("--input", help="directory of FineWeb-schema parquet/jsonl files (--source local)")
    p.add_argument("--hub-config", default="sample-10BT", help="FineWeb config or dump (--source hub)")
    p.add_argument("--hub-max-files", type=int, default=1, help="parquet files to download (--source hub)")
    p.add_argument("--preset", choices=("tiny", "gpt2"), default="tiny")
    p.add_argument("--max-steps", type=int, help="override the preset's optimizer steps")
    p.add_argument("--nproc-per-node", type=int, default=1, help="torchrun processes (GPUs)")
    p.add_argument("--limit-docs", type=int, help="read at most this many documents of the snapshot")
    p.add_argument("--default-max-chars", type=int, help="text budget of the default snapshot")
    p.add_argument("--val-fraction", type=float, default=0.05, help="documents held out for validation")
    p.add_argument("--force", action="store_true", help="recompute even what is up to date")
    p.add_argument("--workspace", help="workspace directory (default $HGPT_WORKSPACE or ./workspace)")
    p.set_defaults(func=_run)

    p = subparsers.add_parser("ui", help="Dagster UI on 127.0.0.1 over the project's instance")
    p.add_argument("--port", type=int, default=3000)
    p.add_argument("--workspace", help="workspace directory (default $HGPT_WORKSPACE or ./workspace)")
    p.set_defaults(func=_ui)

    p = subparsers.add_parser("mlflow-ui", help="MLflow UI on 127.0.0.1 over the project's store")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--workspace", help="workspace directory (default $HGPT_WORKSPACE or ./workspace)")
    p.set_defaults(func=_mlflow_ui)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.orchestration.cli")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

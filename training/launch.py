"""torchrun on one node, with every store it opens bound to the loopback interface.

    python -m training.launch --nproc-per-node 2 -m training --preset tiny --data D --out R

torchrun's rendezvous store and its agent store are torch TCPStore servers, and a TCPStore
server listens on every interface (the wildcard address) whatever host it is given: on a
shared network anyone could connect to a single-node run's stores. On one node nothing outside
it needs them, so this runs torchrun itself (torch.distributed.run) with `--standalone
--local-addr 127.0.0.1`, and creates each store server on a socket already bound to 127.0.0.1
(TCPStore's master_listen_fd). Clients, and servers asked for any other host, are untouched.
Across nodes, use torchrun with --rdzv-endpoint as usual: there the store must be reachable.
"""

from __future__ import annotations

import socket
import sys

import torch.distributed as dist

LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
_POSITIONAL = ("host_name", "port", "world_size", "is_master")


class LoopbackTCPStore(dist.TCPStore):
    """A TCPStore whose server, for a loopback host, listens on 127.0.0.1 only."""

    def __init__(self, *args, **kwargs):
        kwargs.update(zip(_POSITIONAL, args))  # torch's callers pass at most these positionally
        if (kwargs.get("is_master") and kwargs.get("host_name") in LOOPBACK_HOSTS
                and kwargs.get("master_listen_fd") is None):
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", int(kwargs.get("port") or 0)))
            listener.listen(128)
            kwargs.update(host_name="127.0.0.1", port=listener.getsockname()[1],
                          master_listen_fd=listener.fileno(), use_libuv=True)
            self._listener = listener  # the store serves on this socket: keep it open with it
        super().__init__(**kwargs)


def main(argv: list[str] | None = None) -> None:
    from torch.distributed import run

    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a.startswith(("--rdzv-endpoint", "--rdzv_endpoint", "--nnodes", "--master-addr",
                         "--master_addr")) for a in argv):
        raise SystemExit("training.launch is for one node; across nodes run torchrun with "
                         "--rdzv-endpoint (its store must be reachable from the other nodes)")
    dist.TCPStore = LoopbackTCPStore  # what torch's rendezvous code constructs at run time
    from torch.distributed.elastic.rendezvous import c10d_rendezvous_backend

    c10d_rendezvous_backend.TCPStore = LoopbackTCPStore  # imported by name there
    run.main(["--standalone", "--local-addr", "127.0.0.1", *argv])


if __name__ == "__main__":
    main()

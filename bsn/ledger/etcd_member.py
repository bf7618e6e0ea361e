"""Start an ordering-service member (etcd) with its peer port on the ordering network only.

Usage: python3 -m bsn.ledger.etcd_member --peer-host=<member>.<ordering network> -- etcd <flags>

A member is attached to the ordering network and to every app network on its engine
(apps reach its client port, 2379, by container name). etcd binds its peer port (2380)
to an address, not to a network, and refuses host names in listen URLs; bound to
0.0.0.0 it was reachable from every app network. Docker's DNS resolves
``<container>.<network>`` to the container's address on that network only, so this
resolves the member's own ordering address and execs etcd with
``--listen-peer-urls=http://<that address>:2380``. The address is looked up at every
start: Docker may give a restarted container another one. Peers reach each other by the
same ``<member>.<network>`` names (``--initial-advertise-peer-urls``), never through an
app network.

No Django here: this runs inside the member's container (the ledger image).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import time

PEER_PORT = 2380
RESOLVE_TIMEOUT = 30.0  # seconds; Docker's DNS answers at once for a container on the network


def resolve(host: str, *, timeout: float = RESOLVE_TIMEOUT) -> str:
    """The IPv4 address of ``host``; retried until ``timeout`` (SystemExit after)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            address = socket.getaddrinfo(host, PEER_PORT, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
            ipaddress.IPv4Address(address)
            return address
        except (OSError, ValueError) as exc:
            if time.monotonic() >= deadline:
                raise SystemExit(f"etcd_member: cannot resolve {host}: {exc}") from None
        time.sleep(0.2)


def command(argv: list[str], address: str) -> list[str]:
    """The etcd argv after ``--``, with the peer listen URL on ``address``."""
    if "--" not in argv:
        raise SystemExit("usage: python3 -m bsn.ledger.etcd_member --peer-host=HOST -- etcd [flags]")
    etcd = argv[argv.index("--") + 1 :]
    if not etcd:
        raise SystemExit("etcd_member: no etcd command after --")
    etcd = [arg for arg in etcd if not arg.startswith("--listen-peer-urls")]
    return [*etcd, f"--listen-peer-urls=http://{address}:{PEER_PORT}"]


def main(argv: list[str]) -> None:
    hosts = [
        arg.split("=", 1)[1]
        for arg in argv[: argv.index("--") if "--" in argv else None]
        if arg.startswith("--peer-host=")
    ]
    if len(hosts) != 1 or not hosts[0]:
        raise SystemExit("usage: python3 -m bsn.ledger.etcd_member --peer-host=HOST -- etcd [flags]")
    args = command(argv, resolve(hosts[0]))
    os.execvp(args[0], args)  # noqa: S606 - etcd replaces this process (PID 1: it gets the stop signal)


if __name__ == "__main__":
    main(sys.argv[1:])

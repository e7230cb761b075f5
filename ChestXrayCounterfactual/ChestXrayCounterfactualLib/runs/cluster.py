"""Whether the Ray cluster that ``--ray`` names can be reached, asked before ``ray.init``.

``ray.init`` given the address of a cluster that is not there retries for minutes, logging a warning every few
seconds, and never says what to do; a run must instead stop at once with one sentence that names the address and
how to start a cluster there. So the port of the address is tried with one TCP connection, with a bounded timeout
(``auto`` first resolved as Ray resolves it: ``RAY_ADDRESS``, else the cluster started on this machine).
"""

from __future__ import annotations

import socket

from ..errors import ArchiveError

#: Seconds to wait for the cluster's port to accept a connection.
CONNECT_TIMEOUT = 5.0

_START = (
    "start one with `ray start --head` on the head node (and `ray start --address=HEAD:PORT` on the others), "
    "or run on this machine with --ray local:N"
)


def check_cluster(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Raise :class:`ArchiveError` with one sentence if no Ray cluster answers at ``address`` (``auto``,
    ``HOST:PORT`` or ``ray://HOST:PORT``); return if its port accepts a connection (Ray then does the rest).
    """
    host, port = _bootstrap(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as error:
        reason = (error.strerror or type(error).__name__).lower()
        where = address if f"{host}:{port}" in address else f"{host}:{port} (--ray {address})"
        raise ArchiveError(f"no Ray cluster answers at {where} ({reason}); {_START}") from None


def _bootstrap(address: str) -> tuple[str, int]:
    """(host, port) of the cluster ``address`` names; :class:`ArchiveError` if it names none."""
    spec = address.removeprefix("ray://")
    if address == "auto":
        from ray._private.services import canonicalize_bootstrap_address  # Ray's own reading of "auto"

        try:
            spec = canonicalize_bootstrap_address(address) or ""
        except ConnectionError:  # no RAY_ADDRESS and no cluster started on this machine
            raise ArchiveError(f"--ray auto found no running Ray cluster on this machine; {_START}") from None
    host, _, port = spec.rpartition(":")
    if not host or not port.isdigit():
        raise ArchiveError(f"--ray {address} is not auto, local:N, HOST:PORT or ray://HOST:PORT")
    return host.strip("[]"), int(port)

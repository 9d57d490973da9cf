"""Loopback endpoints for tests of what a command does with the network: a port that
refuses, and a count of the connection attempts made to it by anything in this process
(our preflight, urllib3, aiohttp, Ray's client), through a real socket that only counts.

    port = closed_port()
    with connects_to(port) as attempts:
        main(["status", "w", ...])
    assert attempts == [("127.0.0.1", port)]
"""

from __future__ import annotations

import contextlib
import socket


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then let go), so a connect is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def connects_to(port: int):
    """Every connect (blocking or not, `connect` or `connect_ex`) to ``port`` on any host
    made while the block runs, as ``(host, port)``. The sockets are the standard library's,
    subclassed to note the address; the connection itself is made as usual. Every client
    in the process builds its sockets through ``socket.socket`` at call time
    (``socket.create_connection``, urllib3, asyncio), so all of them are counted."""
    real = socket.socket
    attempts: list[tuple[str, int]] = []

    class Counting(real):
        def connect(self, address):
            self._note(address)
            return super().connect(address)

        def connect_ex(self, address):
            self._note(address)
            return super().connect_ex(address)

        def _note(self, address):
            if isinstance(address, tuple) and len(address) >= 2 and address[1] == port:
                attempts.append((address[0], address[1]))

    socket.socket = Counting
    try:
        yield attempts
    finally:
        socket.socket = real

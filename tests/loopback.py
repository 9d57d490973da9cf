"""Loopback endpoints for tests of what a command does with the network: a port that
refuses, a count of the connection attempts made to it by anything in this process
(our preflight, urllib3, aiohttp, Ray's client), through a real socket that only counts,
and an S3 endpoint that a test can make die.

    port = closed_port()
    with connects_to(port) as attempts:
        main(["status", "w", ...])
    assert attempts == [("127.0.0.1", port)]

    with s3_process() as (url, server):
        ...
        server.kill()   # the endpoint is gone: every connection to it closed or refused
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time


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


S3_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@contextlib.contextmanager
def s3_process():
    """moto's standalone S3 server in a process of its own on a loopback port (a thread's
    server, stopped, would go on serving the connections a client keeps open). Yields its
    URL and the process; ended afterwards."""
    port = closed_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"moto's S3 server did not start on port {port} (exit {server.poll()})")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.kill()
        server.wait()

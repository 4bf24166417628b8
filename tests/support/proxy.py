"""A TCP proxy for tests, which can be told to swallow traffic: a store that stops answering.

`swallow()` makes every connection, open or new, go silent without closing: what the client
sends is read and dropped, nothing comes back. That is what a half-open connection looks like
to a client (a server that froze, a network that drops packets, a NAT that forgot the flow),
and the kernel on this side keeps acknowledging, so only the client's own timeouts can notice.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from collections.abc import Iterator

POLL = 0.05
"""Seconds a relay thread waits on its sockets before it looks at the stop flag again."""


class TcpProxy:
    """Listens on 127.0.0.1:<port> and relays each connection to `target`."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(POLL)
        self.port: int = self._listener.getsockname()[1]
        self._swallowing = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.connections = 0
        """Client connections accepted so far."""
        self._accepter = threading.Thread(target=self._accept, name="test-proxy", daemon=True)
        self._accepter.start()

    def swallow(self) -> None:
        """From now on nothing is relayed, either way, on any connection."""
        self._swallowing.set()

    def forward(self) -> None:
        """Relay again (connections opened while swallowing stay silent)."""
        self._swallowing.clear()

    def close(self) -> None:
        self._stopping.set()
        self._accepter.join(timeout=5)
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
                thread = threading.Thread(target=self._relay, args=(client,), daemon=True)
                self._threads.append(thread)
            thread.start()

    def _relay(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        with contextlib.ExitStack() as stack:
            stack.callback(client.close)
            if not self._swallowing.is_set():
                try:
                    upstream = socket.create_connection(self.target, timeout=5)
                except OSError:
                    return
                stack.callback(upstream.close)
            selector = selectors.DefaultSelector()
            stack.callback(selector.close)
            selector.register(client, selectors.EVENT_READ, upstream)
            if upstream is not None:
                selector.register(upstream, selectors.EVENT_READ, client)
            while not self._stopping.is_set():
                for key, _ in selector.select(POLL):
                    source = key.fileobj
                    assert isinstance(source, socket.socket)
                    try:
                        data = source.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    if not self._swallowing.is_set() and key.data is not None:
                        key.data.sendall(data)


@contextlib.contextmanager
def tcp_proxy(host: str, port: int) -> Iterator[TcpProxy]:
    proxy = TcpProxy(host, port)
    try:
        yield proxy
    finally:
        proxy.close()

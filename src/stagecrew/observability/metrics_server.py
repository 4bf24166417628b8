"""The HTTP endpoint that serves a registry's metrics (prometheus-client writes the text).

A small threaded WSGI server of the standard library around prometheus-client's WSGI app,
rather than its `start_http_server`, to own the socket: a port that cannot be bound is one
`ConfigurationError` saying why, and `close` stops the server and frees the port.
"""

from __future__ import annotations

import errno
import socket
import threading
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from ..errors import ConfigurationError


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged: one line every few seconds per scraper says nothing."""


class MetricsServer:
    """Serves `registry` on http://host:port/metrics (and on any other path) until `close`.

    Port 0 takes any free port; `port` says which. Raises `ConfigurationError` when the
    address cannot be bound (in use, not allowed, not a local address).
    """

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        if not 0 <= port <= 65535:
            raise ConfigurationError(f"metrics port {port} is not a port number (0 to 65535)")
        try:
            family = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)[0][0]
        except socket.gaierror as exc:
            raise ConfigurationError(f"cannot serve metrics on {host!r}: {exc.strerror}") from None
        server_class = type("_MetricsServer", (_Server,), {"address_family": family})
        try:
            self._server: WSGIServer = make_server(
                host, port, make_wsgi_app(registry), server_class, handler_class=_QuietHandler
            )
        except OSError as exc:
            raise ConfigurationError(_bind_failure(host, port, exc)) from None
        self.host = host
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="stagecrew-metrics", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        shown = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        if ":" in shown:
            shown = f"[{shown}]"
        return f"http://{shown}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and free the port (a scrape under way finishes on its own thread)."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def _bind_failure(host: str, port: int, exc: OSError) -> str:
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return f"cannot serve metrics on {where}: the port is in use; choose another port"
    if exc.errno == errno.EACCES:
        return (
            f"cannot serve metrics on {where}: not allowed (ports below 1024 need privileges); "
            "choose another port"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot serve metrics on {where}: {host} is not an address of this machine"
    return f"cannot serve metrics on {where}: {exc.strerror or exc}"

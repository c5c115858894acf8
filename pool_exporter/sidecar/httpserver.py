"""The sidecar's HTTP side: routes, basic auth and TLS around prometheus-client's WSGI app.

prometheus-client does the content negotiation and the exposition (through rendered.py, which
renders each worker's label sets once); this adds what an exporter serves beside it and what
`--web.config.file` asks for. The TLS handshake runs in
the request's thread, not in the accepting one, so one slow client cannot stall the others.
"""

from __future__ import annotations

import contextlib
import html
import logging
import socket
import ssl
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client.exposition import ThreadingWSGIServer

from pool_exporter.rendered import Exposed, make_rendering_wsgi_app

from .webconfig import WebConfig

log = logging.getLogger("pool_exporter")

StartResponse = Callable[..., Any]
Environ = dict[str, Any]

REQUEST_TIMEOUT = 30.0


def parse_listen_address(value: str) -> tuple[str, int]:
    """`host:port`, `:port` (every interface) or `[v6addr]:port`, as exporters take them."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(
            f"--web.listen-address {value!r} is not host:port (for example :9653 or 127.0.0.1:9653)"
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", int(port)


class App:
    """The routes: `/`, the telemetry path, `/-/healthy`, `/-/ready`; everything else 404."""

    def __init__(
        self,
        registry: Exposed,
        *,
        telemetry_path: str,
        web: WebConfig,
        ready: Callable[[], str | None],
        title: str = "pool-exporter sidecar",
    ) -> None:
        self.metrics = make_rendering_wsgi_app(registry)
        self.telemetry_path = telemetry_path
        self.web = web
        self.ready = ready
        self.title = title

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "HEAD":
            return self._route(environ, start_response)
        # HEAD: the status and headers GET would get, its Content-Length, and no body.
        answered: list[tuple[str, list[tuple[str, str]]]] = []

        def start(status: str, headers: list[tuple[str, str]], *rest: Any) -> Any:
            answered.append((status, headers))
            return lambda data: None

        body = b"".join(self._route({**environ, "REQUEST_METHOD": "GET"}, start))
        status, headers = answered[0]
        kept = [(k, v) for k, v in headers if k.lower() != "content-length"]
        start_response(status, [*kept, ("Content-Length", str(len(body)))])
        return []

    def _route(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if not self.web.authorized(environ.get("HTTP_AUTHORIZATION")):
            return self._text(
                start_response,
                "401 Unauthorized",
                "Unauthorized\n",
                [("WWW-Authenticate", 'Basic realm="pool-exporter"')],
            )
        path = environ.get("PATH_INFO") or "/"
        if path == self.telemetry_path:
            return self.metrics(environ, self._with_headers(start_response))  # type: ignore[no-any-return]
        routes = {"/": self._landing, "/-/healthy": self._healthy, "/-/ready": self._ready}
        return routes.get(path, self._not_found)(start_response)

    def _healthy(self, start_response: StartResponse) -> list[bytes]:
        return self._text(start_response, "200 OK", "Healthy\n")

    def _ready(self, start_response: StartResponse) -> list[bytes]:
        problem = self.ready()
        if problem:
            return self._text(start_response, "503 Service Unavailable", problem + "\n")
        return self._text(start_response, "200 OK", "Ready\n")

    def _not_found(self, start_response: StartResponse) -> list[bytes]:
        return self._text(start_response, "404 Not Found", "Not Found\n")

    def _with_headers(self, start_response: StartResponse) -> StartResponse:
        def start(status: str, headers: list[tuple[str, str]], *rest: Any) -> Any:
            return start_response(status, headers + list(self.web.headers.items()), *rest)

        return start

    def _text(
        self,
        start_response: StartResponse,
        status: str,
        body: str,
        extra: list[tuple[str, str]] | None = None,
    ) -> list[bytes]:
        headers = [("Content-Type", "text/plain; charset=utf-8"), *(extra or [])]
        start_response(status, headers + list(self.web.headers.items()))
        return [body.encode()]

    def _landing(self, start_response: StartResponse) -> list[bytes]:
        title = html.escape(self.title)
        link = html.escape(self.telemetry_path, quote=True)
        body = (
            f"<!DOCTYPE html>\n<html><head><title>{title}</title></head><body>\n"
            f"<h1>{title}</h1>\n"
            "<p>Connection-pool metrics of every worker of the application, merged from the "
            "multiprocess directory, and the database's view of its connections.</p>\n"
            f'<ul><li><a href="{link}">Metrics</a></li>\n'
            '<li><a href="/-/healthy">Health</a></li>\n'
            '<li><a href="/-/ready">Readiness</a></li></ul>\n'
            "</body></html>\n"
        )
        headers = [("Content-Type", "text/html; charset=utf-8"), *self.web.headers.items()]
        start_response("200 OK", headers)
        return [body.encode()]


class _Handler(WSGIRequestHandler):
    timeout = REQUEST_TIMEOUT  # a client that never finishes its request frees its thread

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class Server(ThreadingWSGIServer):
    """A threading WSGI server; with an SSL context, each connection does its handshake in its
    own thread."""

    ssl_context: ssl.SSLContext | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.ssl_context is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(REQUEST_TIMEOUT)
        wrapped = self.ssl_context.wrap_socket(request, server_side=True)
        try:
            super().finish_request(wrapped, client_address)
        finally:
            wrapped.close()

    def shutdown_request(self, request: Any) -> None:
        with contextlib.suppress(OSError):
            super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that is not speaking TLS, or that hangs up, is its problem, not a traceback.
        log.debug("connection from %s failed", client_address, exc_info=True)


def bind(host: str, port: int, app: App, ssl_context: ssl.SSLContext | None) -> Server:
    """A bound server (`serve_forever()` to run it); OSError if the address cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class Bound(Server):
        address_family = family

    Bound.ssl_context = ssl_context
    return make_server(host, port, app, Bound, handler_class=_Handler)

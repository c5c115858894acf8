"""Serving from inside the application: prometheus-client's own server and apps, with the
registry that fits the process model.

A single-process app serves its default registry. Under PROMETHEUS_MULTIPROC_DIR each worker's
default registry holds that worker's pools only, so `start_http_server` refuses (run
`pool-exporter sidecar` instead) and the WSGI/ASGI apps serve every worker's files merged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import WSGIServer

import prometheus_client
from prometheus_client import REGISTRY
from prometheus_client.registry import CollectorRegistry

from pool_exporter.multiprocess import directory as multiprocess_dir
from pool_exporter.multiprocess.reader import WorkersCollector
from pool_exporter.namefilter import NameFilter


def registry_for_serving() -> CollectorRegistry:
    """The default registry; in multiprocess mode, a registry merging every worker's files."""
    directory = multiprocess_dir()
    if not directory:
        return REGISTRY
    registry = CollectorRegistry()
    registry.register(WorkersCollector(directory))
    return registry


def start_http_server(
    port: int,
    addr: str = "0.0.0.0",
    registry: CollectorRegistry = REGISTRY,
    *,
    certfile: str | None = None,
    keyfile: str | None = None,
) -> tuple[WSGIServer, threading.Thread]:
    """Serve `registry` on `addr:port` from a daemon thread of a single-process application.

    Raises ValueError in multiprocess mode: one worker's server would show one worker's pools,
    and a thread started in a `--preload` master does not survive the fork into workers."""
    if registry is REGISTRY and multiprocess_dir():
        raise ValueError(
            "PROMETHEUS_MULTIPROC_DIR is set, so this process is one of several workers: run "
            "`pool-exporter sidecar` beside the application (or mount make_wsgi_app() / "
            "make_asgi_app() from this module) to serve all of them"
        )
    return prometheus_client.start_http_server(
        port, addr, registry, certfile=certfile, keyfile=keyfile
    )


def make_wsgi_app(registry: CollectorRegistry | None = None) -> Callable[..., Any]:
    """prometheus-client's WSGI app over `registry` (default: `registry_for_serving()`)."""
    return prometheus_client.make_wsgi_app(
        NameFilter(registry if registry is not None else registry_for_serving())
    )


def make_asgi_app(registry: CollectorRegistry | None = None) -> Callable[..., Any]:
    """prometheus-client's ASGI app over `registry` (default: `registry_for_serving()`)."""
    return prometheus_client.make_asgi_app(
        NameFilter(registry if registry is not None else registry_for_serving())
    )

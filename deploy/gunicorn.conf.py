"""gunicorn settings for an application whose pools pool-exporter instruments.

Run with PROMETHEUS_MULTIPROC_DIR set (an empty directory the `pool-exporter sidecar` also
reads); prometheus-client chooses its multiprocess storage from it at import.
"""

import os

from pool_exporter.gunicorn import child_exit  # noqa: F401  (gunicorn reads it by name)

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "4"))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync")
# With preload, engines created at import are shared by fork; instrument() resets every
# worker's numbers after the fork, and instrument(engine, dispose_on_fork=True) also gives each
# worker its own connections (SQLAlchemy's advice for os.fork()).
preload_app = True

# child_exit (imported above) drops a dead worker's gauges at once. Without it, the liveness
# lock each instrumented worker holds lets the sidecar drop them at its next scrape.
#
# The directory is not wiped here: with preload_app the application (and its metric files) is
# loaded before gunicorn's on_starting hook, and this file is read again on SIGHUP. Files left
# by an earlier run do no harm: their gauges are dropped at the first scrape (nobody holds
# their locks) and their counters carry on into this run's totals. Mount an empty directory
# (a Kubernetes emptyDir is empty when the pod starts) to start from zero.

"""Celery settings for an application whose pools pool-exporter instruments.

Load them with `app.config_from_object("celeryconfig")`, and start the worker with
PROMETHEUS_MULTIPROC_DIR in its environment (an empty directory that `pool-exporter sidecar`
also reads): prometheus-client chooses its storage from it when it is imported.

The prefork pool's children are forked with os.fork() from the main worker process, which
imported the application: an engine created and instrumented at import is reset in each child
by Python's fork hooks, and instrument(engine, dispose_on_fork=True) also gives each child its
own connections. The main process stays alive with its own series, at zero. A child replaced
after worker_max_tasks_per_child tasks keeps its counts in the totals; its gauges go at the
sidecar's next scrape (the liveness lock it held is released when it exits, however it
exits), so no Celery signal handler is needed.
"""

worker_pool = "prefork"
worker_max_tasks_per_child = 1000
# A child takes one task at a time, so its pool's gauges show the task it is running.
worker_prefetch_multiplier = 1

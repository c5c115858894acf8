"""The names of the workers' stats and exemplar files, and the patterns a reader tells them
apart by.

A stats file is named by its writer's pid, the token of the writer's liveness lock
(liveness.py) and a sequence number, so a new process given a dead worker's pid never writes
into the dead one's file; its exemplar file (exemplarfile.py) is named after it. The other
files of the directory are named where they are made: liveness.py (a process's lock),
slots.py (the worker slots), archive.py (the archive).
"""

from __future__ import annotations

import re

# A finished stats file: (pid, token, sequence number).
STATS_FILE = re.compile(r"^pool_exporter_(\d+)_([0-9a-f]{16})_(\d+)\.stats$")
# The exemplar file of a stats file (exemplarfile.py), named after it: (pid, token, sequence).
EXEMPLAR_FILE = re.compile(r"^pool_exporter_(\d+)_([0-9a-f]{16})_(\d+)\.exemplars$")

# A stats or exemplar file its writer has not finished (files.create_temporary names it
# `<prefix><random>.tmp` until it is renamed to its STATS_FILE or EXEMPLAR_FILE name), or
# layout 1's `.stats.new`: (pid, token).
UNFINISHED_STATS_FILE = re.compile(
    r"^pool_exporter_(\d+)_([0-9a-f]{16})_(?:[0-9a-f]{16}\.tmp|\d+\.stats\.new)$"
)


def stats_file(pid: int, token: str, seq: int) -> str:
    """The name of the `seq`th stats file of the process `pid` holding the lock `token`."""
    return f"pool_exporter_{pid}_{token}_{seq}.stats"


def exemplar_file(stats_file: str) -> str:
    """The name of the exemplar file that goes with the stats file named `stats_file`."""
    return stats_file.removesuffix(".stats") + ".exemplars"


def unfinished_prefix(pid: int, token: str) -> str:
    """The prefix of that process's unfinished stats and exemplar files: a reader removes one
    whose writer has exited (UNFINISHED_STATS_FILE)."""
    return f"pool_exporter_{pid}_{token}_"

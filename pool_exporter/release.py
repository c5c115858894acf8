"""Which release of pool-exporter this is, as the installed package's metadata says."""

from __future__ import annotations

import importlib.metadata


def installed_version() -> str | None:
    """The installed release's version; None when run from a checkout never installed."""
    try:
        return importlib.metadata.version("pool-exporter")
    except importlib.metadata.PackageNotFoundError:
        return None

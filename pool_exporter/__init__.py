"""pool-exporter: Prometheus metrics for SQLAlchemy connection pools."""

from .instrument import PoolInstrumentation, default_name, instrument
from .metrics import ALL as METRICS

__all__ = ["METRICS", "PoolInstrumentation", "default_name", "instrument"]

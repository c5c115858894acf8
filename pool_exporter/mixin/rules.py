"""The Prometheus recording and alerting rules, built from a `MixinConfig`, group by group.

Records and the alerts that read them share a group: a group evaluates its rules in order,
so an alert sees the records of the same evaluation instead of the previous one, which would
cost a whole interval in a push that saturates a pool within one scrape.
"""

from __future__ import annotations

from collections.abc import Callable

from .config import MixinConfig
from .database_rules import database_group
from .fleet_rules import absent_group, fleet_group
from .pool_rules import long_checkout_group, pool_group
from .pooler_rules import pgbouncer_group
from .rulebase import Group

# One function a group, in the order of the rule file; a new group is one more line here.
GROUPS: tuple[Callable[[MixinConfig], Group], ...] = (
    pool_group,
    fleet_group,
    absent_group,
    pgbouncer_group,
    long_checkout_group,
    database_group,
)


def groups(cfg: MixinConfig) -> list[Group]:
    return [group(cfg) for group in GROUPS]

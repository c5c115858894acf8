"""The example Alertmanager configuration: pages to the pager, warnings to chat, grouped by
pool (and cluster, where there is a cluster label), a pool's warnings held back while a page
for the same pool fires."""

from __future__ import annotations

from typing import Any

from .config import MixinConfig

PAGER, CHAT, TICKETS = "pager", "chat", "tickets"
# `job` with `pool`: two services may both name their pool "default"; and two clusters may both
# run the same service.
GROUP_BY = ("job", "pool")


def group_by(cfg: MixinConfig) -> list[str]:
    return list(cfg.with_cluster(*GROUP_BY))


def alertmanager_config(cfg: MixinConfig) -> dict[str, Any]:
    return {
        "route": {
            "receiver": CHAT,
            "group_by": group_by(cfg),
            # A push saturates a pool within seconds: every second of group_wait comes off
            # the lead time the rules bought.
            "group_wait": "10s",
            "group_interval": "1m",
            "repeat_interval": "4h",
            "routes": [
                {
                    "receiver": PAGER,
                    "matchers": [f'severity="{cfg.severity_page}"'],
                    "group_wait": "0s",
                    "repeat_interval": "1h",
                },
                {"receiver": CHAT, "matchers": [f'severity="{cfg.severity_warning}"']},
                {
                    "receiver": TICKETS,
                    "matchers": [f'severity="{cfg.severity_ticket}"'],
                    "group_wait": "5m",
                    "repeat_interval": "24h",
                },
            ],
        },
        "inhibit_rules": [
            {
                "source_matchers": [f'severity="{cfg.severity_page}"'],
                "target_matchers": [f'severity=~"{cfg.severity_warning}|{cfg.severity_ticket}"'],
                "equal": group_by(cfg),
            }
        ],
        "receivers": [
            {
                "name": PAGER,
                "pagerduty_configs": [
                    {"routing_key": "<your PagerDuty Events API v2 integration key>"}
                ],
            },
            {
                "name": CHAT,
                "slack_configs": [
                    {
                        "api_url": "https://hooks.slack.com/services/REPLACE/WITH/YOURS",
                        "channel": "#database-pools",
                        "send_resolved": True,
                        "title": "{{ .CommonLabels.alertname }} {{ .CommonLabels.pool }}",
                        "text": "{{ range .Alerts }}{{ .Annotations.description }}\n"
                        "{{ .Annotations.runbook_url }}\n{{ end }}",
                    }
                ],
            },
            {
                "name": TICKETS,
                "webhook_configs": [{"url": "http://ticket-bridge.example:8080/alerts"}],
            },
        ],
    }

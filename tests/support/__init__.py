"""Test support: real Alertmanager runs, the promtool case builder, dashboard query helpers."""

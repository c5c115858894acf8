"""The monitoring mixin: one config for the alert rules, their routing and the dashboards."""

"""Multiprocess mode: the per-worker store, worker liveness, and the directory reader."""

"""The sidecar: an HTTP server for the merged worker metrics, and the database view."""

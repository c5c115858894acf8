"""The push incident as a tool: replay a burst, watch it live, size a pool from data."""

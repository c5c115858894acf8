"""What several test modules share: helpers, runners of real processes, the promtool case
builder. Fixtures live in tests/conftest.py."""

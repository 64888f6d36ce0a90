"""Contract tests shared by the tiers: each implementation of an interface runs the same
tests (the in-memory one in tests/unit, the real one in tests/integration)."""

"""Unit tests: pure functions, no database, no processes."""

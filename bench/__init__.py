"""Benchmarks: each prints a table of medians and same-run ratios (never timing asserts in tests)."""

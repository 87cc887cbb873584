"""Benchmarks: `python -m benchmarks.<name>`; not run by the tests."""

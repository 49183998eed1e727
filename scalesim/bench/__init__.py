"""Benchmarks that `scalesim bench` runs (importable from an installed package)."""

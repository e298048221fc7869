"""Benchmarks: `python -m bench.<name>`; results are quoted in the README."""

"""Benchmarks of protoevents (run each as `python -m bench.<name>`)."""

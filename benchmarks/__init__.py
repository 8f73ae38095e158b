"""Throughput benchmarks comparing the two backends (not written yet: see issue 6)."""

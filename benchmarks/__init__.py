"""Benchmarks: each backend against its bare loop and peers, mixed-precision step times, schedule
exactness (docs/benchmarks.md). Speed targets are printed as measured ratios, never asserted in tests."""

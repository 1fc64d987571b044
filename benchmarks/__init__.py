"""Benchmarks: each times a candidate beside its baseline in one process (see harness.py)."""

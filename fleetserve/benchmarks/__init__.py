"""Benchmarks of record: each measures fleetserve against a baseline in the same run (BENCHMARKS.md)."""

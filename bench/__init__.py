"""Benchmark scripts for Switchboard, with their recorded results in BENCHMARKS.md."""

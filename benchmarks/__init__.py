"""Benchmarks, each side by side with a reference (see the issue for the goals)."""

"""Benchmarks of ``di`` against peer libraries and hand-written wiring (see README.md)."""

"""Benchmarks run by `make bench`: counted AWS requests, bytes, import time, ratios.

Every module in this package that defines ``main() -> None`` is a benchmark;
``python -m bench [name ...]`` runs all of them (or the named ones) in one process.
"""

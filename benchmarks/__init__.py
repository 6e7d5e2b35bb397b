"""Benchmark scripts (not part of the installed package).

Run them as modules from the repository root, e.g. ``python -m benchmarks.bench_inference --help``; results go to
``benchmarks/results/*.json`` (see ``benchmarks/README.md``).
"""

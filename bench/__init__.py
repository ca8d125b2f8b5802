"""Benchmarks for jobsched (`make bench`, `python -m bench [--quick] [--only NAME] [--profile DIR]`).

They measure jobsched as its users see it, against the targets of issue 6 (bench/targets.py):
schedulers and executors run in their own processes on a throw-away PostgreSQL database, the
load comes from the benchmark process, and the median figures are printed and appended to
bench/RESULTS.md. One module per measurement (throughput, submits, latency, progress,
statements, memory, read_path); never run as timed tests.
"""

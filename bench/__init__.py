"""Benchmarks for jobsched (`make bench`, `python -m bench [--quick]`).

They measure the client API as it exists today against a scheduler running in its own process on
a throw-away PostgreSQL database, print a table of median figures and append it to
bench/RESULTS.md. Never run as timed tests.
"""

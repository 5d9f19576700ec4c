"""Keel's benchmark suite (issue 8): `make bench` (or `python -m bench.suite`) writes docs/benchmarks.md."""

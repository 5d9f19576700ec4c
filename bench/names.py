"""The benchmarks' database names: `BENCH_DATABASE_PREFIX` (default `keel_bench`) + a suffix per
workload, so two benchmark runs on one server (two checkouts, two people) never drop each other's data."""

import os


def bench_database(suffix: str = "") -> str:
    return os.environ.get("BENCH_DATABASE_PREFIX", "keel_bench") + suffix

"""The benchmark report renders from a results file, and its targets table judges what it measured."""

import json
from pathlib import Path

from bench.suite import report

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.json"


def test_report_renders_the_committed_results() -> None:
    results = json.loads(RESULTS.read_text())
    markdown = report.render(results)
    assert markdown.startswith("# Benchmarks")
    for heading in ("## Targets", "## Method", "### Changes to Keel's core"):
        assert heading in markdown


def test_a_target_is_judged_from_the_ratio_measured_side_by_side() -> None:
    results = json.loads(RESULTS.read_text())
    keel = {"median": 1.2, "min": 1.1, "max": 1.4, "n": 3, "values": [1.1, 1.2, 1.4]}
    results["overhead"]["ratio_over_raw_dbos"]["keel"] = keel
    rows = {target: verdict for target, _, verdict in report.targets(results)}
    assert rows["Keel per-step cost ≤ 1.3× raw DBOS (same run)"] == "**met**"
    results["overhead"]["ratio_over_raw_dbos"]["keel"] = {**keel, "median": 1.31}
    rows = {target: verdict for target, _, verdict in report.targets(results)}
    assert rows["Keel per-step cost ≤ 1.3× raw DBOS (same run)"] == "**missed**"

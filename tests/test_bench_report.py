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


def verdicts(results: dict) -> dict[str, str]:
    return {row[0]: row[-1] for row in report.targets(results)}


def test_a_target_is_judged_from_the_ratio_measured_side_by_side() -> None:
    results = json.loads(RESULTS.read_text())
    keel = {"median": 1.2, "min": 1.1, "max": 1.4, "n": 3, "values": [1.1, 1.2, 1.4]}
    results["overhead"]["ratio_over_raw_dbos"]["keel"] = keel
    assert verdicts(results)["Keel per step vs raw DBOS"] == "**met**"
    results["overhead"]["ratio_over_raw_dbos"]["keel"] = {**keel, "median": 1.21}
    assert verdicts(results)["Keel per step vs raw DBOS"] == "**missed**"


def test_recovery_is_judged_against_raw_dbos_recovering_the_same_number_of_runs() -> None:
    results = json.loads(RESULTS.read_text())
    level = {"keel": {"finished_s": 9.0}, "raw": {"finished_s": 10.0}, "keel_over_raw": 0.9}
    results["recovery"] = {"tools": 1, "levels": {"2000": level, "10000": {**level, "keel_over_raw": 1.5}}}
    rows = {target: (measured, verdict) for target, _, measured, _, verdict in report.targets(results)}
    assert rows["recovery of 2,000 pending runs vs raw DBOS recovering 2,000 workflows of the same shape (time to finish)"] == (
        "0.90× (9.0 s / 10.0 s)", "**met**")
    assert rows["recovery of 10,000 pending runs vs raw DBOS recovering 10,000 workflows of the same shape (time to finish)"][1] == "**missed**"
    results.pop("slow_tools", None)
    assert verdicts(results)["200 concurrent runs whose one tool takes 2 s: tool calls in flight at once"] == "n/a"

"""Run statuses and reasons are named once (steps/run_status.py); what computes them agrees with that list."""

import re
from pathlib import Path

import pytest

from steps.run_status import Reason, RunStatus
from workflows.runs import STATUS_CANDIDATES

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parent.parent


def test_every_status_has_a_listing_candidate():
    assert set(STATUS_CANDIDATES) == set(RunStatus)


async def test_the_runs_view_computes_exactly_the_named_statuses(db):
    view = (await (await db.execute("SELECT pg_get_viewdef('keel.runs'::regclass)")).fetchone())[0]
    status_case = view.split(" AS status", 1)[0].rsplit("CASE", 3)
    computed = set(re.findall(r"(?:THEN|ELSE) '([a-z_]+)'::text", "CASE".join(status_case[1:])))
    assert computed == set(RunStatus), computed ^ set(RunStatus)


def test_every_reason_the_agent_loop_names_is_a_reason():
    loop = (ROOT / "workflows/agent_loop.py").read_text()
    named = set(re.findall(r'fail\("([a-z_]+)"', loop)) | set(re.findall(r'": "([a-z_]+)"', loop.split("def failure_reason", 1)[1]))
    assert named and named <= set(Reason), named - set(Reason)

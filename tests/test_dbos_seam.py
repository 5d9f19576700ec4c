"""Each assumption steps/dbos_seam.py makes about DBOS, held to the pinned DBOS: a DBOS upgrade that
breaks one fails here, not in production."""

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from dbos import DBOS, DBOSPortableJSONSerializer, SetWorkflowID

from app.database import psycopg_conninfo
from steps import dbos_seam, ids, stream
from workflows.agent_loop import agent_run

pytestmark = pytest.mark.unit


@DBOS.workflow(name="seam.waits")
async def waits() -> str:
    return await DBOS.recv_async("go", timeout_seconds=60)


@DBOS.workflow(name="seam.waits_off_the_queue")
async def waits_off_the_queue() -> str:
    with dbos_seam.off_the_queue(DBOS.workflow_id or ""):
        return await DBOS.recv_async("go", timeout_seconds=60)


@DBOS.workflow(name="seam.answers")
async def answers() -> str:
    return "answered"


@DBOS.workflow(name="seam.streams")
async def streams() -> None:
    await DBOS.write_stream_async(stream.KEY, {"token": "from dbos"})
    await stream.publish_tokens(DBOS.workflow_id, 7, 1, "from keel")
    await DBOS.write_stream_async(stream.KEY, {"token": "dbos again"})


@pytest.fixture
async def dbos(database_url: str, ledger_pool) -> AsyncIterator[None]:
    """DBOS launched in the test process on the test database (already migrated, with Keel's serializer)."""
    DBOS(config={"name": "keel-seam", "system_database_url": database_url, "executor_id": "seam-test", "run_migrations": False,
                 "serializer": DBOSPortableJSONSerializer()})
    DBOS.launch()
    yield
    DBOS.destroy(workflow_completion_timeout_sec=0)
    # DBOS made its executor this (session-wide) loop's default and has shut it down: later tests' to_thread would fail.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor())


async def test_the_registry_of_active_workflows_holds_a_running_one(dbos) -> None:
    handle = await DBOS.start_workflow_async(waits)
    for _ in range(100):
        if handle.workflow_id in dbos_seam.active_workflows():
            break
        await asyncio.sleep(0.05)
    assert handle.workflow_id in dbos_seam.active_workflows()
    await DBOS.send_async(handle.workflow_id, "done", "go")
    assert await handle.get_result() == "done"
    assert handle.workflow_id not in dbos_seam.active_workflows()


async def test_a_workflow_waiting_off_the_queue_leaves_its_slot_to_another(dbos) -> None:
    await DBOS.register_queue_async("seam.one_at_a_time", worker_concurrency=1, polling_interval_sec=0.1)
    queue = await DBOS.retrieve_queue_async("seam.one_at_a_time")
    assert queue is not None
    waiting = await queue.enqueue_async(waits_off_the_queue)
    for _ in range(100):
        if waiting.workflow_id in dbos_seam.active_workflows():
            break
        await asyncio.sleep(0.05)
    second = await queue.enqueue_async(answers)
    answered = await asyncio.wait_for(second.get_result(), timeout=20)  # the queue's one slot was free
    await DBOS.send_async(waiting.workflow_id, "done", "go")
    assert answered == "answered"
    assert await waiting.get_result() == "done"
    assert waiting.workflow_id not in dbos_seam.active_workflows()  # the entry came back to be released


async def test_read_stream_reads_the_rows_keel_writes_between_dbos_own(dbos) -> None:
    handle = await DBOS.start_workflow_async(streams)
    await handle.get_result()
    values = [value async for value in DBOS.read_stream_async(handle.workflow_id, stream.KEY)]
    assert values == [{"token": "from dbos"}, {"token": "from keel", "step_id": 7, "attempt": 1}, {"token": "dbos again"}]


async def test_the_runs_view_reads_the_inputs_dbos_writes(dbos, db) -> None:
    run_id = ids.new_run_id()
    with SetWorkflowID(run_id):
        await DBOS.enqueue_workflow_async("seam-nobody-listens", agent_run, {"agent": "billing", "input": "Upgrade C-42 ✓"})
    row = await (await db.execute("SELECT agent, input, status FROM keel.runs WHERE run_id = %s", (run_id,))).fetchone()
    assert row == ("billing", "Upgrade C-42 ✓", "queued")


def test_the_tables_and_columns_keel_names_exist(database_url: str) -> None:
    with psycopg.connect(psycopg_conninfo(database_url)) as conn:
        rows = conn.execute("SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'dbos'").fetchall()
    present = {(table, column) for table, column in rows}
    assert {(t, c) for t, columns in dbos_seam.DBOS_TABLES.items() for c in columns} - present == set()


def test_the_statuses_keel_names_are_dbos_statuses() -> None:
    assert set(dbos_seam.DBOS_ENDED) | {"PENDING", "ENQUEUED", "DELAYED"} <= dbos_seam.DBOS_STATUSES


def test_a_process_without_dbos_can_act_as_an_executor() -> None:
    before = DBOS.executor_id
    try:
        dbos_seam.act_as_executor("seam-acting")
        assert DBOS.executor_id == "seam-acting"
    finally:
        dbos_seam.act_as_executor(before)

"""Workload 7: bytes stored per turn as the conversation grows. One run each of a 10-turn and a
100-turn conversation (turns = model calls; every turn but the last asks for one tool call), for Keel,
raw DBOS and LangGraph + PostgresSaver. Bytes are the logical sizes (octet_length) of everything the
run wrote: DBOS's inputs, step outputs and output; Keel's events and ledger rows; LangGraph's
checkpoints, blobs and writes. If each message is stored once, bytes per turn stay flat."""

import uuid
from typing import Any

import psycopg
from dbos import DBOS

from bench.suite import variants as v
from bench.suite.harness import Harness, set_latency
from bench.suite.setup import KEEL_DB, LANGGRAPH_DB, conninfo

DBOS_BYTES = """
SELECT (SELECT coalesce(sum(octet_length(coalesce(output, '')) + octet_length(coalesce(error, ''))), 0)
          FROM dbos.operation_outputs WHERE workflow_uuid = %(id)s)
     + (SELECT coalesce(sum(octet_length(inputs)), 0) FROM dbos.workflow_input WHERE workflow_uuid = %(id)s)
     + (SELECT coalesce(sum(octet_length(coalesce(output, '')) + octet_length(coalesce(error, ''))), 0)
          FROM dbos.workflow_output WHERE workflow_uuid = %(id)s)
"""
KEEL_BYTES = """
SELECT (SELECT coalesce(sum(octet_length(payload::text)), 0) FROM keel.events WHERE run_id = %(id)s)
     + (SELECT coalesce(sum(octet_length(arguments::text) + octet_length(coalesce(result::text, ''))), 0)
          FROM keel.tool_calls WHERE run_id = %(id)s)
"""
LANGGRAPH_BYTES = """
SELECT (SELECT coalesce(sum(octet_length(checkpoint::text) + octet_length(metadata::text)), 0) FROM checkpoints WHERE thread_id = %(id)s)
     + (SELECT coalesce(sum(octet_length(coalesce(blob, ''::bytea))), 0) FROM checkpoint_blobs WHERE thread_id = %(id)s)
     + (SELECT coalesce(sum(octet_length(blob)), 0) FROM checkpoint_writes WHERE thread_id = %(id)s)
"""


def query(database: str, sql: str, run_id: str) -> int:
    with psycopg.connect(conninfo(database)) as conn:
        return int(conn.execute(sql, {"id": run_id}).fetchone()[0])


async def one(harness: Harness, variant: str, turns: int) -> int:
    prompt = f"tools={turns - 1}"
    if variant == "langgraph":
        thread = uuid.uuid4().hex
        await harness.langgraph.run(prompt, thread_id=thread)
        return query(LANGGRAPH_DB, LANGGRAPH_BYTES, thread)
    if variant == "keel":
        run_id = await v.keel_start(prompt)
    else:
        run_id = uuid.uuid4().hex
        from dbos import SetWorkflowID

        with SetWorkflowID(run_id):
            await DBOS.start_workflow_async(v.raw_agent, prompt)
    await (await DBOS.retrieve_workflow_async(run_id)).get_result()
    total = query(KEEL_DB, DBOS_BYTES, run_id)
    return total + (query(KEEL_DB, KEEL_BYTES, run_id) if variant == "keel" else 0)


async def measure(harness: Harness, turns: list[int]) -> dict[str, Any]:
    print(f"workload 7: payload growth, conversations of {turns} turns", flush=True)
    set_latency(harness, 0, 0)
    result: dict[str, Any] = {"turns": turns, "bytes": {}, "bytes_per_turn": {}, "marginal_per_turn": {}}
    for variant in ("keel", "raw_dbos", "langgraph"):
        sizes = {t: await one(harness, variant, t) for t in turns}
        result["bytes"][variant] = sizes
        result["bytes_per_turn"][variant] = {t: sizes[t] / t for t in turns}
        small, large = min(turns), max(turns)
        result["marginal_per_turn"][variant] = (sizes[large] - sizes[small]) / (large - small)
        print(f"  {variant}: " + ", ".join(f"{t} turns {sizes[t]} B ({sizes[t] / t:.0f} B/turn)" for t in turns)
              + f"; turns {small + 1}..{large} added {result['marginal_per_turn'][variant]:.0f} B/turn", flush=True)
    return result

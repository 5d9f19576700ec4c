"""One tool call run through the ledger in a process of its own, for the lease tests to race, pause
(SIGSTOP) and kill (SIGKILL); its connections are named after its executor ID: `python -m tests.lease_holder <conninfo> <executor ID> <key> <tool> <arguments JSON>`.

It prints the call's outcome as JSON. `KEEL_TEST_LEASE_SECONDS` shortens the lease, so a paused
holder's lease runs out while a test waits."""

import asyncio
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from dbos import DBOS
from psycopg_pool import AsyncConnectionPool

from steps import db, dbos_seam, ledger
from steps.tools import ToolContext, tool


async def wait_for(path: str) -> None:
    while not Path(path).exists():
        await asyncio.sleep(0.05)


@tool
async def external(ctx: ToolContext, effects: str, marker: str, release: str) -> str:
    """An outside effect after a long wait (until the `release` file exists): a line in the `effects` file."""
    Path(marker).write_text(DBOS.executor_id)
    await wait_for(release)
    with open(effects, "a") as out:
        out.write(f"{ctx.idempotency_key} {DBOS.executor_id}\n")
    return DBOS.executor_id


@tool
async def note(ctx: ToolContext, customer_id: str, marker: str, release: str, write_first: bool) -> str:
    """A ticket written through `ctx.db`, before the long wait (`write_first`: its transaction open while
    waiting) or after it."""
    async def write() -> None:
        await ctx.db.execute("INSERT INTO sandbox.tickets (customer_id, subject, idempotency_key) VALUES (%s, %s, %s)",
                             (customer_id, DBOS.executor_id, ctx.idempotency_key))
    if write_first:
        await write()
    Path(marker).write_text(DBOS.executor_id)
    await wait_for(release)
    if not write_first:
        await write()
    return DBOS.executor_id


async def main(conninfo: str, executor_id: str, key: str, tool_name: str, arguments: str) -> None:
    dbos_seam.act_as_executor(executor_id)
    if lease := os.environ.get("KEEL_TEST_LEASE_SECONDS"):
        ledger.LEASE_SECONDS = float(lease)
    pool = AsyncConnectionPool(conninfo, min_size=1, max_size=4, kwargs={"autocommit": True, "application_name": executor_id}, open=False)
    await pool.open()
    db.configure(pool)
    try:
        call = ledger.Call(tool={"external": external, "note": note}[tool_name], key=key, run_id=key, step_id=1, tool_call_id="call_1",
                           arguments=json.loads(arguments))
        print(json.dumps(asdict(await call.attempt(1))), flush=True)
    finally:
        await pool.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))

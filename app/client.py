"""`KeelClient`: Keel's HTTP API from Python, typed. Every method returns the Pydantic view the API
serves (`app.schemas`), so code that drives Keel (a FastAPI app of your own, a script, a test) never
handles raw dicts:

    async with KeelClient("http://127.0.0.1:8000", api_key=KEY) as keel:
        run = await keel.start(billing, "Upgrade customer C-42 to the pro plan")   # RunView
        resolution = await keel.result(billing, run.run_id)                        # a Resolution"""

import asyncio
import time
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
from pydantic import TypeAdapter

from app.schemas import ApprovalView, EventView, RunView
from steps.errors import KeelError, RunFailed
from steps.run_status import ENDED
from workflows.agent import Agent

OutputT = TypeVar("OutputT")
EVENTS = TypeAdapter(list[EventView])
APPROVALS = TypeAdapter(list[ApprovalView])


class APIError(KeelError):
    """Keel refused a request: `status` (404, 409, 422, ...), and the `code`, `message` and `details` it gave."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class KeelClient:
    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def start(self, agent: Agent[Any] | str, input: str, *, run_id: str | None = None) -> RunView:
        """Start a run; with `run_id` (the `Idempotency-Key`), starting it again returns the same run."""
        name = agent if isinstance(agent, str) else agent.name
        started = await self.call("POST", "/v1/runs", json={"agent": name, "input": input},
                                  headers={"Idempotency-Key": run_id} if run_id else None)
        return await self.get(started["run_id"])

    async def get(self, run_id: str) -> RunView:
        return RunView.model_validate(await self.call("GET", f"/v1/runs/{run_id}"))

    async def wait(self, run_id: str, *, timeout: float | None = None, poll: float = 0.2) -> RunView:
        """The run once it has ended (succeeded, failed, compensated, compensation_failed or cancelled);
        `TimeoutError` after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (run := await self.get(run_id)).status not in ENDED:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} is still {run.status} after {timeout} s")
            await asyncio.sleep(poll)
        return run

    async def result(self, agent: Agent[OutputT], run_id: str, *, timeout: float | None = None) -> OutputT:
        """The run's final answer, typed by `agent` (its `output_type`); `RunFailed` (with the reason) if it did not succeed."""
        run = await self.wait(run_id, timeout=timeout)
        if run.status != "succeeded":
            raise RunFailed(run.reason or run.status, run.error or f"run {run_id} ended {run.status}")
        return agent.result(run.output)

    async def events(self, run_id: str) -> list[EventView]:
        return EVENTS.validate_python(await self.call("GET", f"/v1/runs/{run_id}/events"))

    async def approvals(self, *, status: str | None = None, run_id: str | None = None) -> list[ApprovalView]:
        """Approval requests, oldest first (`status="pending"`: the inbox)."""
        params = {k: v for k, v in (("status", status), ("run_id", run_id)) if v is not None}
        return APPROVALS.validate_python(await self.call("GET", "/v1/approvals", params=params))

    async def approve(self, approval_id: str, *, comment: str | None = None, decided_by: str | None = None) -> ApprovalView:
        return await self.decide(approval_id, "approve", comment, decided_by)

    async def reject(self, approval_id: str, *, comment: str | None = None, decided_by: str | None = None) -> ApprovalView:
        return await self.decide(approval_id, "reject", comment, decided_by)

    async def decide(self, approval_id: str, decision: str, comment: str | None, decided_by: str | None) -> ApprovalView:
        body = {k: v for k, v in (("decision", decision), ("comment", comment), ("decided_by", decided_by)) if v is not None}
        return ApprovalView.model_validate(await self.call("POST", f"/v1/approvals/{approval_id}", json=body))

    async def cancel(self, run_id: str) -> RunView:
        """Stop the run and undo its effects; `APIError` 409 if it already ended."""
        return RunView.model_validate(await self.call("POST", f"/v1/runs/{run_id}/cancel"))

    async def call(self, method: str, path: str, **request: Any) -> Any:
        response = await self.http.request(method, path, **request)
        if response.is_success:
            return response.json()
        try:
            error = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            error = {"code": "http_error", "message": response.text}
        raise APIError(response.status_code, error.get("code", "http_error"), error.get("message", ""), error.get("details"))

"""Keel's public API: declare agents and tools here; Keel makes their runs durable.

    from workflows import Agent, tool, ToolContext
"""

from steps.approvals import ApprovalConflict, ApprovalNotFound
from steps.errors import AskModel, KeelError, PermanentToolError, RunFailed, ToolError, TransientToolError, UserError
from steps.retry import RetryPolicy
from steps.tools import ApprovalPolicy, Tool, ToolContext, provide, tool
from workflows.agent import Agent, UnknownAgent, agent_names, get_agent
from workflows.approvals import decide, get_approval, list_approvals
from workflows.doctor import diagnose
from workflows.replay import replay_run
from workflows.runs import (
                            IdempotencyConflict,
                            QueueFull,
                            RunConflict,
                            RunNotFound,
                            cancel_run,
                            child_runs,
                            follow_run,
                            fork_run,
                            get_events,
                            get_run,
                            list_runs,
                            resume_run,
                            retry_failed_compensations,
                            start_run,
)

__all__ = [
    "Agent",
    "ApprovalConflict",
    "ApprovalNotFound",
    "ApprovalPolicy",
    "AskModel",
    "IdempotencyConflict",
    "KeelError",
    "PermanentToolError",
    "RetryPolicy",
    "RunConflict",
    "RunFailed",
    "QueueFull",
    "RunNotFound",
    "Tool",
    "ToolContext",
    "ToolError",
    "TransientToolError",
    "UnknownAgent",
    "UserError",
    "agent_names",
    "cancel_run",
    "decide",
    "diagnose",
    "fork_run",
    "get_approval",
    "follow_run",
    "child_runs",
    "get_events",
    "get_agent",
    "get_run",
    "list_approvals",
    "list_runs",
    "provide",
    "replay_run",
    "resume_run",
    "retry_failed_compensations",
    "start_run",
    "tool",
]

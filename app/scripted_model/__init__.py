"""Offline, deterministic, OpenAI-compatible scripted model used when no API key is configured."""

from app.scripted_model.faults import (
    BAD_FINAL_CONTENT,
    UNKNOWN_TOOL_NAME,
    Fault,
    FaultKind,
    FaultRegistry,
    FaultSpec,
    OutgoingReply,
    OutgoingToolCall,
    shape_reply,
)
from app.scripted_model.planner import FALLBACK_CONTENT, Reply, ToolCall, next_reply
from app.scripted_model.server import MODEL_ID, create_app

__all__ = [
    "BAD_FINAL_CONTENT",
    "FALLBACK_CONTENT",
    "MODEL_ID",
    "UNKNOWN_TOOL_NAME",
    "Fault",
    "FaultKind",
    "FaultRegistry",
    "FaultSpec",
    "OutgoingReply",
    "OutgoingToolCall",
    "Reply",
    "ToolCall",
    "create_app",
    "next_reply",
    "shape_reply",
]

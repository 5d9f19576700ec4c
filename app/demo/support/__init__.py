"""The support demo agents: `support` delegates plan changes to `billing` as a child run; `front_desk` hands the conversation to it."""

from app.demo.support.agent import Triage, front_desk, support

__all__ = ["Triage", "front_desk", "support"]

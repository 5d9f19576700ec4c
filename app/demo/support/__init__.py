"""The support demo agent: triages a customer's request and delegates plan changes to `billing`."""

from app.demo.support.agent import Triage, support

__all__ = ["Triage", "support"]

"""The billing-support demo agent: its tools hit the sandbox services."""

from app.demo.billing.agent import Resolution, billing
from app.demo.billing.tools import Sandbox, configure

__all__ = ["Resolution", "Sandbox", "billing", "configure"]

"""Sandbox services for the demo: payments and mail over HTTP, stored in schema `sandbox`.

They behave like the real thing where it matters to Keel: payments and mail deduplicate by
`Idempotency-Key`, and fault knobs (in `sandbox.faults`, so every process sees them) can make a
service commit its effect and then lose the response."""

from app.sandbox.database import configure
from app.sandbox.routes import router

__all__ = ["configure", "router"]

"""The sandbox's own connection pool: it plays services outside Keel, so it never competes with
Keel's pool (a tool holding a ledger connection while it calls the sandbox must not starve it)."""

from steps.db import PoolSlot

_sandbox = PoolSlot("app.sandbox")
configure = _sandbox.configure
pool = _sandbox.get

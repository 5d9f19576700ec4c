"""Named points where a crash test can have this process SIGKILL itself.

A failpoint kills the process at an exact place (say, after a tool's effect committed but before
its step was checkpointed), which no outside timing can hit reliably. None are active unless
`configure` names them; `app` passes `KEEL_FAILPOINTS`."""

import os
import signal

_active: frozenset[str] = frozenset()


def configure(names: str) -> None:
    global _active
    _active = frozenset(name.strip() for name in names.split(",") if name.strip())


def hit(name: str) -> None:
    if name in _active:
        os.kill(os.getpid(), signal.SIGKILL)

"""Keel's exceptions, by audience.

    KeelError
    ├── UserError              the developer misconfigured something (raised early, at definition)
    ├── ToolError              raised by a tool to say how its call failed
    │   ├── TransientToolError     worth retrying (optionally after `retry_after` seconds)
    │   ├── PermanentToolError     retrying cannot help; the run fails
    │   └── AskModel               the model should try again; `message` is sent back to it
    └── RunFailed              how a run ended when it did not succeed (`reason`, `message`)

Inside durable state, failures are values (`{"ok": false, "error": {...}}`), because DBOS's JSON
serializer does not keep exception types across a replay; only the edges raise these.
"""


class KeelError(Exception):
    pass


class UserError(KeelError):
    """A mistake in how an agent or tool is defined or called."""


class ToolError(KeelError):
    kind = "permanent"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TransientToolError(ToolError):
    kind = "transient"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentToolError(ToolError):
    kind = "permanent"


class AskModel(ToolError):
    kind = "ask_model"


class RunFailed(KeelError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message

"""`@tool`: a typed async function becomes a tool the model can call.

The JSON schema the model sees comes from the signature, the description and argument help from
the docstring (Google style `Args:`); Pydantic validates the model's arguments before the call."""

import dataclasses
import inspect
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar, get_args, get_origin, get_type_hints

from psycopg import AsyncConnection, AsyncCursor
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, create_model

from steps.errors import UserError
from steps.retry import RetryPolicy

TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ARG_LINE = re.compile(r"^\s*(\w+)\s*(?:\([^)]*\))?\s*:\s*(.+)$")


DepsT = TypeVar("DepsT")


class ToolDatabase:
    """`ctx.db`: the tool's transaction in Keel's database, opened on first use.

    Writes made here commit in the same transaction as the call's outcome, so they happen exactly
    once; a tool that never uses it holds no connection while it runs. `await ctx.db.execute(...)`
    (psycopg's `AsyncConnection.execute`), or `await ctx.db.connection()` for the connection itself
    (cursors, `dict_row`). Do not commit or leave the transaction: the ledger ends it."""

    def __init__(self, open_transaction: Callable[[], Awaitable[AsyncConnection]]) -> None:
        self._open = open_transaction

    async def connection(self) -> AsyncConnection:
        return await self._open()

    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> AsyncCursor:
        return await (await self._open()).execute(query, params, **kwargs)


@dataclass(frozen=True, kw_only=True)
class ToolContext(Generic[DepsT]):
    """What a tool may know about its call. Send `idempotency_key` to external APIs.

    Annotate it `ToolContext[Clients]` to be handed the `Clients` object the application provided at
    start-up (`provide(Clients(...))`) as `ctx.deps`; a bare `ToolContext` gets `deps=None`."""

    run_id: str
    tool_call_id: str
    idempotency_key: str
    attempt: int
    db: ToolDatabase
    """The call's own transaction, opened on first use: writes made here commit exactly once, with
    the call's outcome (see `ToolDatabase`)."""
    deps: DepsT


_provided: dict[type, Any] = {}


def provide(deps: Any) -> None:
    """Make `deps` the `ctx.deps` of every tool whose context is annotated `ToolContext[type(deps)]`.

    The application calls this at start-up with the clients its tools need (an HTTP client, say), so
    no tool reaches them through a module global; providing another object of the type replaces it."""
    _provided[type(deps)] = deps


def provided(deps_type: type | None) -> Any:
    """The object provided for `deps_type` (None for a tool that asks for none)."""
    if deps_type is None:
        return None
    try:
        return _provided[deps_type]
    except KeyError:
        raise UserError(f"no {deps_type.__name__} was provided: call workflows.provide({deps_type.__name__}(...)) at start-up") from None


def context_deps_type(annotation: Any) -> tuple[bool, type | None]:
    """Whether `annotation` is a `ToolContext` (bare or `ToolContext[X]`), and X."""
    if annotation is ToolContext:
        return True, None
    if get_origin(annotation) is ToolContext:
        (deps_type,) = get_args(annotation)
        return True, deps_type
    return False, None


Reconcile = Callable[[ToolContext], Awaitable[Any]]
KeyFunction = Callable[[dict[str, Any]], str]
ApprovalRule = bool | Callable[[dict[str, Any]], bool]
DAY = 24 * 3600.0


@dataclass(frozen=True, kw_only=True)
class ApprovalPolicy:
    """When a person must approve a call, how long they have, and what a "no" means.

    `on_reject="tell_model"` answers the model that the call was refused (it may go on without it);
    `"fail"` fails the run. At the deadline the request is rejected, or with `on_expire="escalate"`
    given one more `timeout` (an `approval_escalated` event marks it) before it is rejected."""

    required: ApprovalRule = False
    timeout: float = DAY
    on_reject: Literal["tell_model", "fail"] = "tell_model"
    on_expire: Literal["reject", "escalate"] = "reject"

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise UserError(f"approval timeout must be positive, not {self.timeout}")
        if self.on_reject not in ("tell_model", "fail") or self.on_expire not in ("reject", "escalate"):
            raise UserError("on_reject must be 'tell_model' or 'fail'; on_expire 'reject' or 'escalate'")

    def needed_for(self, arguments: dict[str, Any]) -> bool:
        return bool(self.required(arguments) if callable(self.required) else self.required)


@dataclass(frozen=True, kw_only=True, eq=False)
class Tool:
    function: Callable[..., Awaitable[Any]]
    name: str
    description: str
    arguments: type[BaseModel]
    takes_ctx: bool
    deps_type: type | None
    """The `X` of the function's `ctx: ToolContext[X]`: what `ctx.deps` is."""
    result: TypeAdapter[Any]
    retry: RetryPolicy
    approval: ApprovalPolicy
    idempotency_key: KeyFunction | None = None
    reconcile: Reconcile | None = None
    dependency: str = ""
    """The service this tool calls, for its circuit breaker (several tools can share one)."""
    timeout: float | None = None
    """Seconds one attempt may take; a call that hangs longer is cancelled and counts as transient."""
    compensation: "Tool | None" = None
    """Undoes this tool's effect when the run fails or is cancelled: called as
    `compensation(ctx, arguments=<the call's arguments>, result=<its recorded result>)`."""
    irreversible: bool = False
    delegate: Any = None
    """The agent (`workflows.Agent`) a call of this tool hands its `input` to, as a child run
    (`Agent.as_tool`); its effects are undone with the caller's, by the child's own rollback."""

    @property
    def undoable(self) -> bool:
        """Whether a failed run undoes this tool's effects: it has a compensation, or it delegates."""
        return self.compensation is not None or self.delegate is not None

    def __call__(self, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        return self.function(*args, **kwargs)

    def schema(self) -> dict[str, Any]:
        """The tool as Chat Completions' `tools` entry."""
        parameters = self.arguments.model_json_schema()
        parameters.pop("title", None)
        return {"type": "function", "function": {"name": self.name, "description": self.description, "parameters": parameters}}

    def validate(self, arguments: Any) -> dict[str, Any]:
        """The model's arguments, validated and as JSON; raises `pydantic.ValidationError`."""
        return self.arguments.model_validate(arguments).model_dump(mode="json")

    def business_key(self, arguments: dict[str, Any]) -> str | None:
        return f"{self.name}:{self.idempotency_key(arguments)}" if self.idempotency_key else None

    async def invoke(self, ctx: ToolContext, arguments: dict[str, Any]) -> Any:
        """Call the function with validated arguments; the result comes back as JSON."""
        validated = self.arguments.model_validate(arguments)
        kwargs = {name: getattr(validated, name) for name in type(validated).model_fields}
        value = await (self.function(ctx, **kwargs) if self.takes_ctx else self.function(**kwargs))
        return self.result.dump_python(value, mode="json")

    async def reconciled(self, ctx: ToolContext) -> Any | None:
        """Ask the outside world whether this call's effect already happened (None: it did not)."""
        if self.reconcile is None:
            return None
        value = await self.reconcile(ctx)
        return None if value is None else self.result.dump_python(value, mode="json")


def tool(
    function: Callable[..., Awaitable[Any]] | None = None,
    /,
    *,
    name: str | None = None,
    idempotency_key: KeyFunction | None = None,
    reconcile: Reconcile | None = None,
    retry: RetryPolicy | None = None,
    requires_approval: ApprovalRule = False,
    approval: ApprovalPolicy | None = None,
    compensation: "Callable[..., Awaitable[Any]] | Tool | None" = None,
    irreversible: bool = False,
    dependency: str | None = None,
    timeout: float | None = None,
) -> Any:
    """Declare a tool: bare `@tool`, or `@tool(idempotency_key=..., reconcile=..., retry=...)`.

    `requires_approval` (True, or a predicate of the arguments such as
    `lambda a: a["amount_cents"] > 10_000`) makes the run wait for a person's decision before the
    call; `approval=ApprovalPolicy(...)` sets the deadline and what a rejection means.

    `compensation` undoes the effect if the run later fails or is cancelled: an async function
    `(ctx, arguments: dict, result)` (or a `@tool` of one, to give it a retry policy). It runs as its
    own durable workflow, exactly once, with an idempotency key of its own. `irreversible=True`
    marks an effect that cannot be undone: the model is told to call it last, and a failed run
    lists it among the effects left in place.

    `dependency` names the service behind the tool (default: the tool's name); its circuit breaker
    is shared by every tool and worker that names it. `timeout` bounds one attempt, in seconds.

    `idempotency_key(arguments)` gives a business key, so the same effect is deduplicated across
    runs; by default a call's key is `<run_id>:<step_id>`. `reconcile(ctx)` is asked, when a
    previous attempt recorded its intent but no outcome, whether the effect already happened."""

    if requires_approval and approval is not None:
        raise UserError("give either requires_approval or approval=ApprovalPolicy(required=...), not both")
    if compensation is not None and irreversible:
        raise UserError("a tool with a compensation is not irreversible")
    if timeout is not None and timeout <= 0:
        raise UserError(f"timeout must be positive, not {timeout}")
    policy = approval or ApprovalPolicy(required=requires_approval)

    def build(fn: Callable[..., Awaitable[Any]]) -> Tool:
        built = _build_tool(fn, name=name, idempotency_key=idempotency_key, reconcile=reconcile, retry=retry, approval=policy)
        undo = None
        if compensation is not None:
            undo = compensation if isinstance(compensation, Tool) else _build_tool(
                compensation, name=f"undo_{built.name}", idempotency_key=None, reconcile=None, retry=None, approval=ApprovalPolicy())
            if set(undo.arguments.model_fields) != {"arguments", "result"}:
                raise UserError(f"compensation of {built.name!r} must take (ctx, arguments: dict, result)")
        description = f"{built.description} This cannot be undone: call it last." if irreversible else built.description
        return dataclasses.replace(built, compensation=undo, irreversible=irreversible, description=description,
                                   dependency=dependency or built.name, timeout=timeout)

    return build(function) if function is not None else build


def _build_tool(fn: Callable[..., Awaitable[Any]], *, name: str | None, idempotency_key: KeyFunction | None,
                reconcile: Reconcile | None, retry: RetryPolicy | None, approval: ApprovalPolicy) -> Tool:
    tool_name = name or fn.__name__
    if not TOOL_NAME.match(tool_name):
        raise UserError(f"tool name {tool_name!r} must match {TOOL_NAME.pattern}")
    if not inspect.iscoroutinefunction(fn):
        raise UserError(f"tool {tool_name!r} must be an `async def` function")
    if reconcile is not None and not inspect.iscoroutinefunction(reconcile):
        raise UserError(f"reconcile of tool {tool_name!r} must be an `async def` function")
    hints = get_type_hints(fn)
    summary, arg_help = _parse_docstring(inspect.getdoc(fn) or "")
    params = list(inspect.signature(fn).parameters.values())
    takes_ctx, deps_type = context_deps_type(hints.get(params[0].name)) if params else (False, None)
    fields: dict[str, Any] = {}
    for param in params[1:] if takes_ctx else params:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise UserError(f"tool {tool_name!r}: *args and **kwargs cannot be described to a model")
        if param.name not in hints:
            raise UserError(f"tool {tool_name!r}: argument {param.name!r} needs a type annotation")
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (hints[param.name], Field(default, description=arg_help.get(param.name)))
    arguments = create_model(f"{tool_name}_arguments", __config__=ConfigDict(extra="forbid"), **fields)
    return Tool(
        function=fn,
        name=tool_name,
        description=summary or tool_name,
        arguments=arguments,
        takes_ctx=takes_ctx,
        deps_type=deps_type,
        result=TypeAdapter(hints.get("return", Any)),
        retry=retry or RetryPolicy(),
        approval=approval,
        dependency=tool_name,
        idempotency_key=idempotency_key,
        reconcile=reconcile,
    )


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The summary (text before `Args:`) and each argument's help line."""
    summary_lines: list[str] = []
    arg_help: dict[str, str] = {}
    in_args = False
    for line in doc.splitlines():
        if line.strip() in ("Args:", "Arguments:", "Parameters:"):
            in_args = True
        elif in_args and (match := ARG_LINE.match(line)):
            arg_help[match.group(1)] = match.group(2).strip()
        elif in_args and line.strip() and not line.startswith((" ", "\t")):
            in_args = False
        elif not in_args:
            summary_lines.append(line)
    return " ".join(" ".join(summary_lines).split()), arg_help

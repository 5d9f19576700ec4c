"""The web console: server-rendered pages over the same functions as the JSON API.

Pages authenticate with a server-side session (`app.sessions`): `/console/login` takes an API key and
sets the `keel_session` cookie (a random ID, HttpOnly, SameSite=Strict), which ends at logout, at its
expiry (`KEEL_SESSION_TTL`) or when its key is revoked. Every form POST must come from the console's
own origin and carry the session's CSRF token (`app.console.forms`), and its fields go through the
API's request models, so the console refuses what the API refuses. Everything is escaped by Jinja's
autoescape; the only JavaScript is the live timeline (`static/timeline.js`), and every page works
without it."""

import json
import re
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import jinja2
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from app import sessions
from app.auth import BearerKey, Principal, SessionCookie, find_key, identify, record_submitter
from app.console.forms import PostedForm, csrf_of, read_form, refuse_foreign_origin, validated
from app.routers.approvals import decider
from app.routers.runs import decode_cursor, encode_cursor
from app.schemas import APPROVAL_ID_PATTERN, ApprovalDecision, RunCreate
from steps import db, ids
from steps.ids import READABLE_RUN_ID
from steps.run_status import STATUSES
from workflows import (
    ApprovalConflict,
    ApprovalNotFound,
    IdempotencyConflict,
    RunConflict,
    RunNotFound,
    UserError,
    agent_names,
    child_runs,
    decide,
    get_events,
    get_run,
    list_approvals,
    list_runs,
    start_run,
)

HERE = Path(__file__).resolve().parent
STATIC = {"console.css": "text/css", "timeline.js": "text/javascript"}
PAGE_SIZE = 25
MAX_KEY_CHARS = 200

templates = Jinja2Templates(env=jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                                                   undefined=jinja2.StrictUndefined))


def when(value: datetime | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


templates.env.filters["when"] = when
templates.env.filters["pretty"] = pretty


class ConsoleRoute(APIRoute):
    """Refusals become pages: no key (or a bad one) redirects to the login form, a missing role is a
    403 page, an unknown run or approval a 404 page, a conflicting decision a 409 page."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except HTTPException as exc:
                if exc.status_code == 401:
                    target = request.url.path + (f"?{request.url.query}" if request.url.query else "") if request.method == "GET" else "/console"
                    return RedirectResponse(f"/console/login?next={quote(target)}", status_code=303)
                return problem(request, exc.status_code, "Not allowed" if exc.status_code == 403 else "Refused", str(exc.detail))
            except (RunNotFound, ApprovalNotFound) as exc:
                return problem(request, 404, "Not found", str(exc))
            except (RunConflict, ApprovalConflict, IdempotencyConflict) as exc:
                return problem(request, 409, "Conflict", str(exc))
            except UserError as exc:
                return problem(request, 422, "Not valid", str(exc))

        return handle


def problem(request: Request, status: int, title: str, message: str) -> HTMLResponse:
    return templates.TemplateResponse(request, "problem.html", {"title": title, "message": message, "user": None, "auth": auth_on(request),
                                                                "csrf": ""}, status_code=status)


def auth_on(request: Request) -> bool:
    return request.app.state.settings.auth != "off"


async def console_user(request: Request, credentials: BearerKey, session_id: SessionCookie) -> Principal:
    """The person using the console; their forms' CSRF tokens are checked by `PostedForm`."""
    return await identify(request, credentials, session_id, session_writes=True)


User = Annotated[Principal, Depends(console_user)]  # 401 becomes a redirect to the login form (ConsoleRoute)


def role(principal: Principal, *roles: str) -> None:
    if not principal.may(*roles):  # type: ignore[arg-type]
        raise HTTPException(403, f"This needs a key with role {' or '.join(roles)}; you are logged in as {principal.name}, "
                                 f"whose role is {principal.role}.")


def local_target(target: str | None, default: str = "/console") -> str:
    """Only redirect within the console (no open redirect to another site)."""
    if target and target.startswith("/console") and not target.startswith("//"):
        return target
    return default


def page(request: Request, name: str, user: Principal | None, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, {"user": user, "auth": auth_on(request), "csrf": csrf_of(request), **context})


router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)


@router.get("/static/{name}")
async def static(name: str) -> FileResponse:
    if name not in STATIC:
        raise HTTPException(404, f"no file {name}")
    return FileResponse(HERE / "static" / name, media_type=STATIC[name])


@router.get("/login")
async def login_form(request: Request, next: str | None = None) -> Response:
    if not auth_on(request):
        return RedirectResponse(local_target(next), status_code=303)
    return page(request, "login.html", None, next=local_target(next), error=None)


@router.post("/login")
async def login(request: Request) -> Response:
    refuse_foreign_origin(request)  # no session yet, so no token: a page elsewhere must not log a browser in as its key
    fields = await read_form(request)
    target = local_target(fields.get("next"))
    if not auth_on(request):
        return RedirectResponse(target, status_code=303)
    secret = fields.get("key", "").strip()
    async with db.pool().connection() as conn:
        principal = await find_key(conn, secret) if 0 < len(secret) <= MAX_KEY_CHARS else None
        if principal is None or principal.key_id is None:
            response = page(request, "login.html", None, next=target, error="That key is not valid or was revoked.")
            response.status_code = 401
            return response
        session_id = await sessions.open_session(conn, principal.key_id, request.app.state.settings.session_ttl)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(sessions.COOKIE, session_id, max_age=int(request.app.state.settings.session_ttl), httponly=True, samesite="strict",
                        path="/", secure=request.url.scheme == "https")
    response.delete_cookie(sessions.LEGACY_COOKIE, path="/")
    return response


@router.post("/logout")
async def logout(request: Request, _: PostedForm) -> Response:
    """End the session on the server (a copy of the cookie is worth nothing after this), then in the browser."""
    if session_id := request.cookies.get(sessions.COOKIE):
        async with db.pool().connection() as conn:
            await sessions.end_session(conn, session_id)
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(sessions.COOKIE, path="/", httponly=True, samesite="strict")
    response.delete_cookie(sessions.LEGACY_COOKIE, path="/")
    return response


@router.get("")
async def runs_page(request: Request, user: User, status: str | None = None, agent: str | None = None, cursor: str | None = None) -> Response:
    status = status if status in STATUSES else None
    agent = agent if agent in agent_names() else None
    runs = await list_runs(status=status, agent=agent, limit=PAGE_SIZE, before=decode_cursor(cursor) if cursor else None)
    next_cursor = encode_cursor(runs[-1]["created_at"], runs[-1]["run_id"]) if len(runs) == PAGE_SIZE else None
    return page(request, "runs.html", user, runs=runs, status=status, agent=agent, statuses=STATUSES, agents=agent_names(),
                next_cursor=next_cursor, paged=cursor is not None)


@router.post("/runs")
async def submit_run(user: User, fields: PostedForm) -> Response:
    role(user, "submit")
    body = validated(RunCreate, {"agent": fields.get("agent", ""), "input": fields.get("input", "").strip()})
    run = await start_run(body.agent, body.input, owner=user.owner)
    await record_submitter(run["run_id"], user)
    return RedirectResponse(f"/console/runs/{quote(run['run_id'])}", status_code=303)


@router.get("/runs/{run_id}")
async def run_page(request: Request, run_id: str, user: User) -> Response:
    if not READABLE_RUN_ID.match(run_id):
        raise RunNotFound(f"no run {run_id!r}")
    run = await get_run(run_id)
    events = await get_events(run_id)
    start = events[0]["at"] if events else None
    for event in events:
        event["offset"] = (event["at"] - start).total_seconds()
        event["undo"] = ids.undo_label(run_id, event["source"])
    decided = [a for a in await list_approvals(run_id=run_id) if a["status"] != "pending"]
    return page(request, "run.html", user, run=run, events=events, decided=decided, children=await child_runs(run_id))


@router.get("/approvals")
async def approvals_page(request: Request, user: User) -> Response:
    role(user, "approve")
    return page(request, "approvals.html", user, approvals=await list_approvals(status="pending", limit=200))


@router.post("/approvals/{approval_id}")
async def decide_approval(approval_id: str, user: User, fields: PostedForm) -> Response:
    role(user, "approve")
    if not re.match(APPROVAL_ID_PATTERN, approval_id):
        raise ApprovalNotFound(f"no approval {approval_id!r}")
    body = validated(ApprovalDecision, {"decision": fields.get("decision"), "comment": fields.get("comment") or None})
    await decide(approval_id, body.decision, decided_by=decider(user, None), decided_by_key_id=user.key_id, comment=body.comment)
    return RedirectResponse(local_target(fields.get("next"), "/console/approvals"), status_code=303)

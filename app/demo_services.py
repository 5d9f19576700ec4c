"""The demo services: `/sandbox` (fake payments and mail, with fault knobs) and `/scripted` (the
offline model). They exist for the zero-config local run (`KEEL_DEMO_SERVICES`, `Settings.demo_services`).

Where they are mounted, they answer only requests that arrived over loopback, from loopback, and not
through a proxy (no forwarding header): a worker deployed on a public interface never serves them,
whatever its settings say about the bind. The offline model also needs a key, since its request log
holds every run's input: the token Keel's own model client uses, or an admin API key."""

import json
import secrets
from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from app import auth, sandbox, scripted_model
from app.config import Settings, is_loopback
from steps import db

FORWARDING_HEADERS = {b"forwarded", b"x-forwarded-for", b"x-forwarded-host", b"x-real-ip"}
Authorize = Callable[[Scope], Awaitable[tuple[int, str] | None]]
"""None lets the request through; otherwise (status, message) refuses it."""


def arrived_locally(scope: Scope) -> bool:
    server, client = scope.get("server"), scope.get("client")
    return (server is not None and is_loopback(server[0]) and client is not None and is_loopback(client[0])
            and not any(name in FORWARDING_HEADERS for name, _ in scope["headers"]))


class LoopbackOnly:
    """Wraps a demo service: refuses requests that did not arrive over loopback, then asks `authorize`."""

    def __init__(self, app: ASGIApp, authorize: Authorize | None = None) -> None:
        self.app = app
        self.authorize = authorize

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = (403, "the demo services answer only requests that arrive over loopback (KEEL_DEMO_SERVICES)") \
                if not arrived_locally(scope) else await self.authorize(scope) if self.authorize else None
            if refusal:
                await refuse(send, *refusal)
                return
        await self.app(scope, receive, send)


async def refuse(send: Send, status: int, message: str) -> None:
    code = {401: "unauthorized", 403: "forbidden"}[status]
    body = json.dumps({"error": {"code": code, "message": message, "details": None}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def token_or_admin(settings: Settings, token: str) -> Authorize:
    """The offline model's callers: Keel's own model client (`token`) or a person with an admin key."""

    async def authorize(scope: Scope) -> tuple[int, str] | None:
        if settings.auth == "off":
            return None
        sent = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1").removeprefix("Bearer ").strip()
        if sent and secrets.compare_digest(sent, token):
            return None
        if not sent:
            return 401, "the offline model needs a key: `Authorization: Bearer <admin key>`"
        async with db.pool().connection() as conn:
            principal = await auth.find_key(conn, sent)
        if principal is None:
            return 401, "the API key is not valid or was revoked"
        return None if principal.role == "admin" else (403, "the offline model's requests hold every run's input: this needs an admin key")

    return authorize


def mount(app: FastAPI, settings: Settings) -> str | None:
    """Mount the demo services if the settings want them; returns the key Keel's model client must
    send to the offline model (None when it is not mounted)."""
    if not settings.demo_services:
        return None
    payments = FastAPI(title="Keel sandbox", description="Fake payments and mail for the demo, with fault knobs.")
    payments.include_router(sandbox.router)
    app.mount("/sandbox", LoopbackOnly(payments))
    if not settings.offline:
        return None
    token = settings.offline_model_token.get_secret_value() if settings.offline_model_token else secrets.token_urlsafe(32)
    app.mount("/scripted", LoopbackOnly(scripted_model.create_app(), token_or_admin(settings, token)))
    return token


def refusal_to_start(settings: Settings) -> str | None:
    """Why this worker must not start, if its settings put the demo services (or no model at all) where they do not belong."""
    if settings.demo_services and not is_loopback(settings.host):
        return (f"KEEL_DEMO_SERVICES is on, but KEEL_HOST={settings.host} is not a loopback address: the demo services (fake payments, "
                "the offline model) are for a local run only. Set KEEL_DEMO_SERVICES=off, or bind KEEL_HOST=127.0.0.1.")
    if settings.offline and not settings.demo_services:
        return ("no model is configured (OPENAI_BASE_URL, OPENAI_API_KEY) and the demo services, which hold the offline model, are off: "
                "configure a model, or set KEEL_DEMO_SERVICES=on for a local trial.")
    return None

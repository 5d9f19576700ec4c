"""API keys: bearer tokens stored as SHA-256 digests in `keel.api_keys`, each with one role.

`submit` starts runs and acts on its own runs, `approve` decides approvals, `admin` does everything
(including other keys' runs and key management). Any valid key may read. With `KEEL_AUTH=off`
(local development only) every request acts as an admin named `anonymous`.

The console's session cookie (`app.sessions`) stands for its key too, but on `/v1` only for reading:
a page on another port of the same host is same-site, so a SameSite=Strict cookie does not stop its
requests; every `/v1` write needs the key in `Authorization: Bearer`."""

import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from app import sessions
from steps import db

Role = Literal["submit", "approve", "admin"]
ROLES: tuple[Role, ...] = ("submit", "approve", "admin")
PREFIX = "keel_"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Principal:
    key_id: str | None
    """None: authentication is off."""
    name: str
    role: Role

    @property
    def owner(self) -> str:
        """Whose runs and idempotency keys these are: the key's ID, or the one implicit owner with keys off."""
        return self.key_id or self.name

    def may(self, *roles: Role) -> bool:
        return self.role == "admin" or self.role in roles


ANONYMOUS = Principal(key_id=None, name="anonymous", role="admin")


def digest(secret: str) -> str:
    # Keys carry 256 random bits, so a fast digest is enough: there is nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


async def create_key(conn: AsyncConnection, name: str, role: Role) -> tuple[dict[str, Any], str]:
    """A new key: its row (without the secret) and the secret, which is shown once and never stored."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    secret = PREFIX + secrets.token_urlsafe(32)
    key_id = "key_" + secrets.token_hex(6)
    cursor = conn.cursor(row_factory=dict_row)
    row = await (await cursor.execute(
        "INSERT INTO keel.api_keys (key_id, name, role, digest) VALUES (%s, %s, %s, %s) RETURNING key_id, name, role, created_at, revoked_at",
        (key_id, name, role, digest(secret)),
    )).fetchone()
    return row, secret


async def list_keys(conn: AsyncConnection) -> list[dict[str, Any]]:
    cursor = conn.cursor(row_factory=dict_row)
    return await (await cursor.execute("SELECT key_id, name, role, created_at, revoked_at FROM keel.api_keys ORDER BY created_at")).fetchall()


async def revoke_key(conn: AsyncConnection, key_id: str) -> dict[str, Any] | None:
    """Revoke at once (every request looks the key up); revoking twice keeps the first time."""
    cursor = conn.cursor(row_factory=dict_row)
    return await (await cursor.execute(
        "UPDATE keel.api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE key_id = %s RETURNING key_id, name, role, created_at, revoked_at",
        (key_id,),
    )).fetchone()


async def find_key(conn: AsyncConnection, secret: str) -> Principal | None:
    row = await (await conn.execute("SELECT key_id, name, role FROM keel.api_keys WHERE digest = %s AND revoked_at IS NULL",
                                    (digest(secret),))).fetchone()
    return Principal(*row) if row else None


async def ensure_local_key(conn: AsyncConnection, path: Path) -> str:
    """The admin key of a local (embedded-database) install, kept in `path` so the CLI finds it."""
    if path.exists():
        secret = path.read_text().strip()
        if await find_key(conn, secret):
            return secret
    _, secret = await create_key(conn, "local", "admin")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(secret + "\n")
    return secret


def unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer keel_...`")
console_cookie = APIKeyCookie(name=sessions.COOKIE, auto_error=False, description="The console's session (read-only on `/v1`)")
BearerKey = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
SessionCookie = Annotated[str | None, Depends(console_cookie)]


async def identify(request: Request, credentials: HTTPAuthorizationCredentials | None, session_id: str | None, *,
                   session_writes: bool) -> Principal:
    """The caller, from `Authorization: Bearer <key>`, else from a console session (which changes
    nothing unless `session_writes`: the console checks its forms' CSRF tokens, `/v1` has none)."""
    if request.app.state.settings.auth == "off":
        return ANONYMOUS
    if not credentials and session_id and not session_writes and request.method not in SAFE_METHODS:
        raise unauthorized("the console's session only reads the API: send the key in `Authorization: Bearer <key>` to change anything")
    async with db.pool().connection() as conn:
        if credentials:
            principal = await find_key(conn, credentials.credentials.strip())
            if principal is None:
                raise unauthorized("the API key is not valid or was revoked")
            return principal
        if session_id:
            row = await sessions.find_session(conn, session_id)
            if row is None:
                raise unauthorized("the console session ended or expired: log in again")
            return Principal(*row)
    raise unauthorized("an API key is required: send `Authorization: Bearer <key>` (create one with `keel keys create`)")


async def authenticate(request: Request, credentials: BearerKey, session_id: SessionCookie) -> Principal:
    """The caller of a `/v1` operation: a bearer key, or a console session for reading only."""
    return await identify(request, credentials, session_id, session_writes=False)


Caller = Annotated[Principal, Depends(authenticate)]


def require(*roles: Role) -> Any:
    """A dependency that lets through keys with one of `roles` (or admin) and refuses others with 403."""

    async def check(principal: Caller) -> Principal:
        if not principal.may(*roles):
            raise HTTPException(403, f"this needs a key with role {' or '.join(roles)}; yours is {principal.role}")
        return principal

    return Depends(check)


async def record_submitter(run_id: str, principal: Principal) -> None:
    if principal.key_id is None:
        return
    async with db.pool().connection() as conn:
        await conn.execute("INSERT INTO keel.run_submitters (run_id, key_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                           (run_id, principal.key_id))


async def check_owner(run_id: str, principal: Principal) -> None:
    """Acting on a run (cancel, fork, resume, compensate) needs its submitter's key or an admin key."""
    if principal.role == "admin":
        return
    async with db.pool().connection() as conn:
        row = await (await conn.execute(
            "SELECT s.key_id FROM dbos.workflow_status w LEFT JOIN keel.run_submitters s ON s.run_id = w.workflow_uuid WHERE w.workflow_uuid = %s",
            (run_id,))).fetchone()
    if row is None:
        return  # no such run: the action answers 404
    if row[0] != principal.key_id:
        raise HTTPException(403, f"run {run_id} was submitted with another key; acting on it needs an admin key")

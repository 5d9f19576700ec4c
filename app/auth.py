"""API keys: bearer tokens stored as SHA-256 digests in `keel.api_keys`, each with one role.

`submit` starts runs and acts on its own runs, `approve` decides approvals, `admin` does everything
(including other keys' runs and key management). Any valid key may read. With `KEEL_AUTH=off`
(local development only) every request acts as an admin named `anonymous`."""

import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from steps import db

Role = Literal["submit", "approve", "admin"]
ROLES: tuple[Role, ...] = ("submit", "approve", "admin")
PREFIX = "keel_"
COOKIE = "keel_key"  # the console's session: the key itself, HttpOnly and SameSite=Strict


@dataclass(frozen=True)
class Principal:
    key_id: str | None
    """None: authentication is off."""
    name: str
    role: Role

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
console_cookie = APIKeyCookie(name=COOKIE, auto_error=False, description="The console's session (the same API key)")


async def authenticate(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
                       cookie: Annotated[str | None, Depends(console_cookie)]) -> Principal:
    """The caller, from `Authorization: Bearer <key>` or the console's cookie."""
    if request.app.state.settings.auth == "off":
        return ANONYMOUS
    secret = credentials.credentials if credentials else cookie
    if not secret:
        raise unauthorized("an API key is required: send `Authorization: Bearer <key>` (create one with `keel keys create`)")
    async with db.pool().connection() as conn:
        principal = await find_key(conn, secret.strip())
    if principal is None:
        raise unauthorized("the API key is not valid or was revoked")
    return principal


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

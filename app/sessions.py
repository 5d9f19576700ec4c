"""The console's sessions, kept on the server in `keel.console_sessions`.

Logging in with an API key opens a session: a random 256-bit ID goes to the browser as the
`keel_session` cookie (never the key itself), and the table keeps only its SHA-256 digest, the key
it acts for, and an expiry. A session ends at logout, at its expiry, or when its key is revoked.

Each session has a CSRF token, derived from the session ID with a keyed digest: a page of the
console carries it in every form, the server recomputes it from the cookie, and a page elsewhere
can neither read the cookie (HttpOnly) nor compute the token."""

import hashlib
import hmac
import secrets

from psycopg import AsyncConnection

COOKIE = "keel_session"
LEGACY_COOKIE = "keel_key"
"""The cookie of earlier versions, which held the API key itself: removed at login and logout."""

FIND = """
SELECT k.key_id, k.name, k.role FROM keel.console_sessions s JOIN keel.api_keys k USING (key_id)
WHERE s.digest = %s AND s.ended_at IS NULL AND s.expires_at > now() AND k.revoked_at IS NULL
"""


def digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


async def open_session(conn: AsyncConnection, key_id: str, ttl_seconds: float) -> str:
    """A new session for `key_id`; returns its ID, the cookie's value (stored only as a digest)."""
    session_id = secrets.token_urlsafe(32)
    await conn.execute("DELETE FROM keel.console_sessions WHERE expires_at < now() - interval '1 day'")  # keep the table small
    await conn.execute("INSERT INTO keel.console_sessions (digest, key_id, expires_at) VALUES (%s, %s, now() + make_interval(secs => %s))",
                       (digest(session_id), key_id, ttl_seconds))
    return session_id


async def find_session(conn: AsyncConnection, session_id: str) -> tuple[str, str, str] | None:
    """(key_id, name, role) of a live session: not ended, not expired, its key not revoked."""
    return await (await conn.execute(FIND, (digest(session_id),))).fetchone()


async def end_session(conn: AsyncConnection, session_id: str) -> None:
    await conn.execute("UPDATE keel.console_sessions SET ended_at = coalesce(ended_at, now()) WHERE digest = %s", (digest(session_id),))


def csrf_token(session_id: str) -> str:
    return hmac.new(session_id.encode(), b"keel-console-csrf", hashlib.sha256).hexdigest()


def csrf_matches(session_id: str, token: str) -> bool:
    return hmac.compare_digest(csrf_token(session_id), token)

"""`/v1/keys`: API key management (admin keys only). The CLI's `keel keys` does the same in the database."""

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path
from pydantic import BaseModel, ConfigDict, Field

from app import auth
from app.schemas import V1_ERRORS, Text
from steps import db

router = APIRouter(prefix="/v1/keys", tags=["keys"], responses=V1_ERRORS, dependencies=[auth.require("admin")])


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text = Field(min_length=1, max_length=200)
    role: Literal["submit", "approve", "admin"]


class KeyView(BaseModel):
    key_id: str
    name: str
    role: str
    created_at: datetime
    revoked_at: datetime | None


class KeyCreated(KeyView):
    key: str = Field(description="The bearer token. Shown in this response only: Keel stores its SHA-256 digest.")


@router.get("", response_model=list[KeyView])
async def read_keys() -> list[dict]:
    async with db.pool().connection() as conn:
        return await auth.list_keys(conn)


@router.post("", status_code=201, response_model=KeyCreated)
async def create_key(body: KeyCreate) -> dict:
    async with db.pool().connection() as conn:
        row, secret = await auth.create_key(conn, body.name, body.role)
    return {**row, "key": secret}


@router.delete("/{key_id}", response_model=KeyView)
async def revoke_key(key_id: Annotated[str, Path(pattern=r"^key_[0-9a-f]{12}$")]) -> dict:
    """Revoke at once: the next request with the key gets 401. Revoking twice is a no-op."""
    async with db.pool().connection() as conn:
        row = await auth.revoke_key(conn, key_id)
    if row is None:
        raise HTTPException(404, f"no key {key_id!r}")
    return row

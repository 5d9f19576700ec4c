"""`/v1/doctor`: runs that are not progressing, with a suggested fix for each."""

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from app.auth import authenticate
from app.schemas import V1_ERRORS
from workflows import diagnose

router = APIRouter(prefix="/v1/doctor", tags=["operations"], responses=V1_ERRORS, dependencies=[Depends(authenticate)])


class Finding(BaseModel):
    run_id: str
    problem: str
    details: dict[str, Any]
    fix: str


@router.get("", response_model=list[Finding])
async def doctor(request: Request) -> list[dict[str, Any]]:
    settings = request.app.state.settings
    return await diagnose(current_version=settings.app_version, stale_after=3 * settings.heartbeat_interval)

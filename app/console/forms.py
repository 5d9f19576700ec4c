"""The console's forms: a POST is read only once it has shown that a console page sent it, and its
fields are validated by the API's own request models before anything is stored.

Two defences against a page elsewhere acting in a logged-in browser, either of which would do:
- the origin: a browser names the page that sent a POST (`Origin`, `Sec-Fetch-Site`); anything but
  the console's own origin is refused. SameSite=Strict does not cover this: another port of the
  same host is the same site.
- the session's CSRF token (`app.sessions.csrf_token`), which every console form carries and no
  other page can know."""

from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qs

from fastapi import Depends, HTTPException, Request
from pydantic import BaseModel, ValidationError

from app import sessions
from steps.errors import UserError

Model = TypeVar("Model", bound=BaseModel)
SAME_ORIGIN = "same-origin"


def refuse_foreign_origin(request: Request) -> None:
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    origin, site = request.headers.get("origin"), request.headers.get("sec-fetch-site")
    if origin is not None and origin != own:
        raise HTTPException(403, f"This request came from another origin ({origin}): the console only takes its own forms.")
    if site is not None and site != SAME_ORIGIN:
        raise HTTPException(403, f"This request came from another origin (Sec-Fetch-Site: {site}): the console only takes its own forms.")


async def read_form(request: Request) -> dict[str, str]:
    """An `application/x-www-form-urlencoded` body (the console's forms send nothing else)."""
    try:
        text = (await request.body()).decode("utf-8")
    except UnicodeDecodeError:
        raise UserError("The form is not valid UTF-8.") from None
    return {name: values[-1] for name, values in parse_qs(text, keep_blank_values=True).items()}


def check_csrf(request: Request, fields: dict[str, str]) -> None:
    """A form sent with the session cookie (not with a bearer key) must carry the session's token."""
    session_id = request.cookies.get(sessions.COOKIE)
    if request.app.state.settings.auth == "off" or "authorization" in request.headers or not session_id:
        return
    if not sessions.csrf_matches(session_id, fields.get("csrf", "")):
        raise HTTPException(403, "The form's security token is missing or out of date: reload the page and try again.")


async def posted_form(request: Request) -> dict[str, str]:
    """The fields of a console form that came from a console page."""
    refuse_foreign_origin(request)
    fields = await read_form(request)
    check_csrf(request, fields)
    return fields


PostedForm = Annotated[dict[str, str], Depends(posted_form)]


def validated(model: type[Model], data: dict[str, Any]) -> Model:
    """The API's request model, filled from a form: the same rules and limits at every door."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(part) for part in error['loc']) or 'form'}: {error['msg']}" for error in exc.errors())
        raise UserError(f"The form is not valid: {problems}.") from None


def csrf_of(request: Request) -> str:
    """The token a page's forms carry: the session's, or none (keys off, or a bearer key)."""
    session_id = request.cookies.get(sessions.COOKIE)
    return sessions.csrf_token(session_id) if session_id else ""

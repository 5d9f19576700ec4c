"""`KEEL_MAX_BODY_BYTES`, held while a body is read: a pure ASGI middleware.

A `Content-Length` over the limit is refused before anything is read. A body without one (chunked)
is counted as it arrives: the read that passes the limit raises `BodyTooLarge`, an HTTP 413 that the
app's error handler renders like any refusal, so no handler ever sees more than the limit.

(FastAPI 0.165's own `max_body_size` counts the same way, but answers a declared oversize body in
`text/plain`, replacing the API's one error shape; hence this.)"""

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the body exceeds {limit} bytes (KEEL_MAX_BODY_BYTES)")


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self.refuse(send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def watching_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except BodyTooLarge:
            # Raised where no error handler catches it (a response that listens for the body, say): answer here if we still can.
            if not started:
                await self.refuse(send)

    async def refuse(self, send: Send) -> None:
        body = json.dumps({"error": {"code": "too_large", "message": BodyTooLarge(self.max_bytes).detail, "details": None}}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

"""A cap on request bodies: larger ones get 413 RequestTooLargeError.

Plain ASGI middleware, as ``netmaster.ha``'s forwarder: a request that states
its Content-Length costs one header scan and is refused before its body is
read; only a body without a length (chunked) is counted while the app reads it.
No netmaster object comes near the limit; it bounds what one request can make
the server hold and echo back.
"""

from __future__ import annotations

import logging

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import RequestTooLargeError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` with 413."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length is None:
            await self._counted(scope, receive, send)
        elif length > self.max_bytes:
            await _refuse(RequestTooLargeError(length, self.max_bytes), scope, send)
        else:
            # The server delivers no more than the stated length.
            await self.app(scope, receive, send)

    async def _counted(self, scope: Scope, receive: Receive, send: Send) -> None:
        received = 0
        refused: RequestTooLargeError | None = None
        started = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = RequestTooLargeError(None, self.max_bytes)
                    raise refused
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            # Whatever the app answers to a body cut short (FastAPI: 400, the
            # forwarder: its own error) gives way to the 413 below.
            if refused is not None and not started:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            # An error that stems from the refused read is answered by the 413.
            if refused is None or started:
                raise
        if refused is not None and not started:
            await _refuse(refused, scope, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(error: RequestTooLargeError, scope: Scope, send: Send) -> None:
    log.info(
        "request refused method=%s path=%s size=%s limit=%d",
        scope["method"],
        scope["path"],
        error.size,
        error.limit,
    )
    # The unread body stays on the connection: close it after the answer.
    response = JSONResponse(
        error.to_dict(),
        status_code=error.http_status,
        headers={"Connection": "close"},
    )
    await response(scope, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.disconnect"}

"""Several netmaster replicas behind one API: followers forward writes to the leader.

Reads and streams are served by every replica from the shared store. A write
(POST, PUT, DELETE) reaching a follower is forwarded to the leader once, with
its body, content type and ``X-Netplugin-*`` audit headers, and the leader's
answer returned unchanged, so clients never need to know who leads. With no
leader known, or when a forwarded request meets another follower, the answer is
503 NotLeaderError with Retry-After, which clients retry.

The forwarder is plain ASGI middleware: on the leader, the common case, it
costs one attribute check per request (FastAPI's ``@app.middleware("http")``
wrapper cost about a third of a create's server time in bench/ipam.py).
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
from fastapi import FastAPI
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import NotLeaderError
from netmaster.leader import Leadership

log = logging.getLogger(__name__)

WRITE_METHODS = frozenset({"POST", "PUT", "DELETE", "PATCH"})
FORWARDED_HEADER = "x-netmaster-forwarded-by"
AUDIT_PREFIX = "x-netplugin-"
FORWARD_TIMEOUT_S = 30.0
RETRY_AFTER_S = "1"


class Forwarding:
    """What forwarding needs across requests; owns the HTTP session."""

    def __init__(self, leadership: Leadership) -> None:
        self.leadership = leadership
        self._session: aiohttp.ClientSession | None = None

    def client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S)
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def not_leader(self) -> Response:
        error = NotLeaderError(self.leadership.identity, self.leadership.leader_url)
        return JSONResponse(
            error.to_dict(),
            status_code=error.http_status,
            headers={"Retry-After": RETRY_AFTER_S},
        )


class WriteForwarder:
    """ASGI middleware: writes on a follower go to the leader."""

    def __init__(self, app: ASGIApp, forwarding: Forwarding) -> None:
        self.app = app
        self.forwarding = forwarding

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or self.forwarding.leadership.is_leader
            or scope["method"] not in WRITE_METHODS
            or not scope["path"].startswith("/api/v1/")
        ):
            await self.app(scope, receive, send)
            return
        response = await self._forward(scope, receive)
        await response(scope, receive, send)

    async def _forward(self, scope: Scope, receive: Receive) -> Response:
        forwarding = self.forwarding
        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
        }
        leader = forwarding.leadership.leader_url
        if leader is None or FORWARDED_HEADER in headers:
            return forwarding.not_leader()
        target = f"{leader.rstrip('/')}{scope['path']}"
        if scope.get("query_string"):
            target += f"?{scope['query_string'].decode('latin-1')}"
        outgoing = {
            name: value
            for name, value in headers.items()
            if name == "content-type" or name.startswith(AUDIT_PREFIX)
        }
        outgoing[FORWARDED_HEADER] = forwarding.leadership.identity
        body = await _read_body(receive)
        try:
            async with forwarding.client().request(
                scope["method"],
                target,
                data=body,
                headers=outgoing,
                allow_redirects=False,
            ) as answer:
                payload = await answer.read()
                log.debug(
                    "write forwarded method=%s path=%s leader=%s status=%d",
                    scope["method"],
                    scope["path"],
                    leader,
                    answer.status,
                )
                return Response(
                    payload,
                    status_code=answer.status,
                    media_type=answer.headers.get("Content-Type"),
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("leader unreachable for forward leader=%s error=%s", leader, exc)
            return forwarding.not_leader()


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message: Message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def install(app: FastAPI, leadership: Leadership) -> Forwarding:
    """Add write forwarding and ``GET /api/v1/leader/`` to ``app``."""
    forwarding = Forwarding(leadership)
    app.add_middleware(WriteForwarder, forwarding=forwarding)

    @app.get("/api/v1/leader/")
    async def leader() -> dict[str, Any]:
        return {
            "self": leadership.identity,
            "isLeader": leadership.is_leader,
            "leaderURL": leadership.leader_url,
        }

    return forwarding

"""Several netmaster replicas behind one API: followers forward writes to the leader.

Reads and streams are served by every replica from the shared store. A write
(POST, PUT, DELETE) reaching a follower is forwarded to the leader once and the
leader's answer returned unchanged, so clients never need to know who leads.
With no leader known, or when a forwarded request meets another follower, the
answer is 503 NotLeaderError with Retry-After, which clients retry.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from api.errors import NotLeaderError
from netmaster.leader import Leadership

log = logging.getLogger(__name__)

WRITE_METHODS = frozenset({"POST", "PUT", "DELETE", "PATCH"})
FORWARDED_HEADER = "X-Netmaster-Forwarded-By"
FORWARD_TIMEOUT_S = 30.0
RETRY_AFTER_S = "1"


def _not_leader(leadership: Leadership) -> JSONResponse:
    error = NotLeaderError(leadership.identity, leadership.leader_url)
    return JSONResponse(
        error.to_dict(),
        status_code=error.http_status,
        headers={"Retry-After": RETRY_AFTER_S},
    )


class WriteForwarder:
    """Owns the HTTP session used to forward writes; close() ends it."""

    def __init__(self, leadership: Leadership) -> None:
        self.leadership = leadership
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S)
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __call__(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if (
            request.method not in WRITE_METHODS
            or not request.url.path.startswith("/api/v1/")
            or self.leadership.is_leader
        ):
            return await call_next(request)
        leader = self.leadership.leader_url
        if leader is None or FORWARDED_HEADER in request.headers:
            return _not_leader(self.leadership)
        return await self._forward(request, leader)

    async def _forward(self, request: Request, leader: str) -> Response:
        target = f"{leader.rstrip('/')}{request.url.path}"
        if request.url.query:
            target += f"?{request.url.query}"
        headers = {FORWARDED_HEADER: self.leadership.identity}
        if "content-type" in request.headers:
            headers["Content-Type"] = request.headers["content-type"]
        body = await request.body()
        try:
            async with self._client().request(
                request.method,
                target,
                data=body,
                headers=headers,
                allow_redirects=False,
            ) as answer:
                payload = await answer.read()
                log.debug(
                    "write forwarded method=%s path=%s leader=%s status=%d",
                    request.method,
                    request.url.path,
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
            return _not_leader(self.leadership)


def install(app: FastAPI, leadership: Leadership) -> WriteForwarder:
    """Add write forwarding and ``GET /api/v1/leader/`` to ``app``."""
    forwarder = WriteForwarder(leadership)
    app.middleware("http")(forwarder)

    @app.get("/api/v1/leader/")
    async def leader() -> dict[str, Any]:
        return {
            "self": leadership.identity,
            "isLeader": leadership.is_leader,
            "leaderURL": leadership.leader_url,
        }

    return forwarder

"""A test double for code that talks OVSDB: a scripted JSON-RPC peer.

`FakeOVSDBServer` is a JSON-RPC peer on a unix socket that a test drives by hand
(read what the client sent, answer, send raw bytes, hang up); no OVS needed.
Tests against a real ovsdb-server use `testbed.ovs.OVSInstance`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from api.errors import OVSDBConnectionError

from .jsonrpc import JSONStreamDecoder

#: Decides the reply to a request: a reply object (its "id" is filled in) or None to
#: leave the request in the session's queue for the test to handle.
Responder = Callable[[dict[str, Any]], dict[str, Any] | None]

VSWITCH_SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")


class FakeSession:
    """One client connection to the fake server."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        responder: Responder | None,
        answer_echo: bool,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._responder = responder
        self._answer_echo = answer_echo
        self._decoder = JSONStreamDecoder("fake-session")
        #: Every message the client sent, in order, including auto-answered ones.
        self.received: list[dict[str, Any]] = []
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.closed = asyncio.Event()

    async def serve(self) -> None:
        try:
            while data := await self._reader.read(65536):
                for message in self._decoder.feed(data):
                    self.received.append(message)
                    await self._handle(message)
        except (ConnectionError, OVSDBConnectionError):
            pass  # the client went away or sent garbage: the session just ends
        finally:
            self.closed.set()
            self._writer.close()

    async def _handle(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        if method == "echo" and self._answer_echo and message.get("id") is not None:
            await self.reply(message, result=message.get("params"))
            return
        if self._responder is not None and method is not None:
            reply = self._responder(message)
            if reply is not None:
                await self.send({"id": message.get("id"), **reply})
                return
        self._queue.put_nowait(message)

    async def next_message(self, timeout_s: float = 2.0) -> dict[str, Any]:
        """The next message not answered automatically."""
        async with asyncio.timeout(timeout_s):
            return await self._queue.get()

    async def send(self, message: dict[str, Any]) -> None:
        await self.send_raw(json.dumps(message).encode())

    async def send_raw(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def reply(
        self, request: dict[str, Any], result: Any = None, error: Any = None
    ) -> None:
        await self.send({"id": request["id"], "result": result, "error": error})

    def hang_up(self) -> None:
        """Close the connection from the server side."""
        self._writer.close()


class FakeOVSDBServer:
    """A scripted JSON-RPC peer listening on unix socket `path`.

    By default it answers the client's `echo` requests and queues everything else
    for the test (`session.next_message()`); a `responder` may answer more.
    """

    def __init__(
        self,
        path: Path,
        *,
        responder: Responder | None = None,
        answer_echo: bool = True,
    ) -> None:
        self.path = path
        self._responder = responder
        self._answer_echo = answer_echo
        self._server: asyncio.Server | None = None
        self._sessions: asyncio.Queue[FakeSession] = asyncio.Queue()
        self._all_sessions: list[FakeSession] = []

    @property
    def endpoint(self) -> str:
        return f"unix:{self.path}"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_unix_server(
            self._accept, path=str(self.path)
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
        # Hang up rather than cancel: asyncio (3.11) logs an error for a cancelled
        # client_connected_cb task. Each session's serve() then ends on EOF.
        for session in self._all_sessions:
            session.hang_up()
        async with asyncio.timeout(5.0):
            for session in self._all_sessions:
                await session.closed.wait()
            if self._server is not None:
                await self._server.wait_closed()

    async def _accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        session = FakeSession(reader, writer, self._responder, self._answer_echo)
        self._sessions.put_nowait(session)
        self._all_sessions.append(session)
        await session.serve()

    async def session(self, timeout_s: float = 2.0) -> FakeSession:
        """The next client connection."""
        async with asyncio.timeout(timeout_s):
            return await self._sessions.get()

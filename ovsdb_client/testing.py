"""Test doubles for code that talks OVSDB: a scripted peer and a sandboxed real server.

`FakeOVSDBServer` is a JSON-RPC peer on a unix socket that a test drives by hand
(read what the client sent, answer, send raw bytes, hang up); no OVS needed.
`OVSDBSandbox` runs a real ovsdb-server, and optionally ovs-vswitchd inside a network
namespace it creates, all under one directory; it stops exactly the processes it
started (by the pids in its own pidfiles) and deletes the namespace it made.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
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


class OVSDBSandbox:
    """A real ovsdb-server with the Open_vSwitch schema under `directory`.

    Use as a context manager or call `start()`/`stop()`. `start_vswitchd()` (root
    only) also runs ovs-vswitchd in a namespace made for it, with OVS_RUNDIR set to
    `directory` so nothing is written to /var/run/openvswitch. Keep `directory`
    short: unix socket paths are limited to 107 bytes.
    """

    def __init__(self, directory: Path, schema: Path = VSWITCH_SCHEMA) -> None:
        self.directory = directory.resolve()
        self.schema = schema
        self.socket = self.directory / "db.sock"
        self.netns: str | None = None
        self._db_pidfile = self.directory / "ovsdb-server.pid"
        self._vs_pidfile = self.directory / "ovs-vswitchd.pid"

    @property
    def endpoint(self) -> str:
        return f"unix:{self.socket}"

    @staticmethod
    def missing() -> str | None:
        """Why a sandbox cannot run here, or None when it can."""
        for tool in ("ovsdb-server", "ovsdb-tool", "ovs-vsctl"):
            if shutil.which(tool) is None:
                return f"{tool} is not on PATH (install openvswitch-switch)"
        if not VSWITCH_SCHEMA.exists():
            return f"{VSWITCH_SCHEMA} is missing"
        return None

    @staticmethod
    def vswitchd_missing() -> str | None:
        """Why ovs-vswitchd cannot be run in a namespace here, or None."""
        if os.geteuid() != 0:
            return "ovs-vswitchd in a network namespace needs root"
        for tool in ("ovs-vswitchd", "ip"):
            if shutil.which(tool) is None:
                return f"{tool} is not on PATH"
        return None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Create the database and start ovsdb-server; stops it again on failure."""
        self.directory.mkdir(parents=True, exist_ok=True)
        db = self.directory / "conf.db"
        _run(["ovsdb-tool", "create", str(db), str(self.schema)])
        try:
            _run(
                [
                    "ovsdb-server",
                    str(db),
                    f"--remote=punix:{self.socket}",
                    f"--pidfile={self._db_pidfile}",
                    f"--log-file={self.directory / 'ovsdb-server.log'}",
                    f"--unixctl={self.directory / 'ovsdb-server.ctl'}",
                    "--detach",
                ]
            )
            self.vsctl("--no-wait", "init")
        except BaseException:
            self.stop()
            raise

    def start_vswitchd(self) -> None:
        """Start ovs-vswitchd in a new network namespace (root only)."""
        self.netns = f"ovsdbt-{secrets.token_hex(4)}"
        _run(["ip", "netns", "add", self.netns])
        env = {**os.environ, "OVS_RUNDIR": str(self.directory)}
        _run(
            [
                "ip",
                "netns",
                "exec",
                self.netns,
                "ovs-vswitchd",
                f"unix:{self.socket}",
                f"--pidfile={self._vs_pidfile}",
                f"--log-file={self.directory / 'ovs-vswitchd.log'}",
                "--detach",
            ],
            env=env,
        )

    def vsctl(self, *args: str) -> str:
        """Run ovs-vsctl against this server; return its stdout."""
        return _run(["ovs-vsctl", f"--db={self.endpoint}", "--timeout=10", *args])

    def stop(self) -> None:
        """Stop what was started, in reverse order; safe to call more than once.

        Bridges are deleted before ovs-vswitchd stops, because the userspace
        datapath leaves its tap devices behind otherwise.
        """
        errors: list[Exception] = []
        if self._vs_pidfile.exists():
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                for bridge in self.vsctl("list-br").split():
                    self.vsctl("--if-exists", "del-br", bridge)
            _stop_pidfile(self._vs_pidfile, errors)
        if self.netns is not None:
            try:
                _run(["ip", "netns", "delete", self.netns])
                self.netns = None
            except (subprocess.SubprocessError, OSError) as exc:
                errors.append(exc)
        _stop_pidfile(self._db_pidfile, errors)
        if errors:
            raise ExceptionGroup("sandbox cleanup failed", errors)


def _run(argv: list[str], env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=30, env=env, check=False
    )
    if done.returncode != 0:
        raise subprocess.CalledProcessError(
            done.returncode, argv, output=done.stdout, stderr=done.stderr
        )
    return done.stdout


def _stop_pidfile(pidfile: Path, errors: list[Exception]) -> None:
    """Send SIGTERM to the pid in `pidfile` and wait for it; SIGKILL after 5 s."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        while _alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.02)
    except ProcessLookupError:
        pass
    except OSError as exc:
        errors.append(exc)
    with contextlib.suppress(FileNotFoundError):
        pidfile.unlink()


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"

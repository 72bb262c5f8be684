"""JSON-RPC 1.0 over one OVSDB stream (RFC 7047 section 4 and its JSON-RPC usage).

Owns: endpoint strings (`unix:PATH`, `tcp:HOST:PORT`), splitting the byte stream into
the concatenated JSON objects ovsdb-server sends (no delimiters), request ids and their
pending futures, per-call deadlines, answering the server's `echo` requests, handing
notifications (`update`, `locked`, ...) to a callback, the optional echo keepalive, and
failing every pending call with OVSDBConnectionError when the connection ends.
Not here: what the methods mean (see client.py). `ssl:` endpoints are not supported.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self

from api.errors import (
    OVSDBConnectionError,
    OVSDBRequestError,
    OVSDBTimeout,
    ValidationError,
)

log = logging.getLogger(__name__)

#: Called from the reader task with (method, params) for every notification.
NotificationHandler = Callable[[str, Any], None]
#: Called once from the reader task with the reason when the connection has ended.
CloseHandler = Callable[[str], None]

# A monitor reply for a large database can be tens of MiB; anything beyond this is
# treated as a broken peer rather than buffered without end.
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024
_READ_CHUNK_BYTES = 256 * 1024
_PROBE_ID_PREFIX = "probe-"

# Outside strings only these bytes change the nesting depth or start a string; inside a
# string only a quote or a backslash matters. UTF-8 continuation bytes never match.
_STRUCTURAL = re.compile(rb'[{}\[\]"]')
_STRING_SPECIAL = re.compile(rb'["\\]')
_NON_SPACE = re.compile(rb"[^ \t\r\n]")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A parsed OVSDB endpoint: `unix:/path/db.sock` or `tcp:HOST:PORT`."""

    kind: str
    path: str = ""
    host: str = ""
    port: int = 0

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse an endpoint; raises ValidationError naming the accepted forms."""
        expected = "unix:/path/to/db.sock or tcp:HOST:PORT"
        kind, _, rest = text.partition(":")
        if kind == "unix" and rest:
            return cls(kind="unix", path=rest)
        if kind == "tcp":
            host, _, port = rest.rpartition(":")
            host = host.removeprefix("[").removesuffix("]")
            if host and port.isdigit() and 0 < int(port) < 65536:
                return cls(kind="tcp", host=host, port=int(port))
        raise ValidationError("endpoint", text, expected)

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp:{host}:{self.port}"


class JSONStreamDecoder:
    """Split a byte stream of concatenated JSON objects into decoded messages.

    ovsdb-server writes one JSON object after another with no delimiter, so message
    boundaries are found by tracking brackets outside strings. The scan position
    is kept between `feed` calls, so each byte is looked at once however the stream is
    split; a complete object is then decoded by the json module in one call.
    """

    def __init__(
        self, endpoint: str, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    ) -> None:
        self._endpoint = endpoint
        self._max_message_bytes = max_message_bytes
        self._buf = bytearray()
        self._pos = 0  # next byte to scan
        self._start = -1  # offset of the current message's "{", -1 between messages
        self._closers = bytearray()  # expected closing brackets, innermost last
        self._in_string = False

    @property
    def buffered_bytes(self) -> int:
        """Bytes received but not yet returned as a message."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Any]:
        """Add bytes; return every message completed by them, in order.

        Raises OVSDBConnectionError when the stream cannot be JSON-RPC (a value that is
        not an object, malformed JSON, or a message over the size limit).
        """
        self._buf += data
        messages: list[Any] = []
        consumed = 0
        buf = self._buf
        end = len(buf)
        i = self._pos

        while i < end:
            if self._in_string:
                match = _STRING_SPECIAL.search(buf, i)
                if match is None:
                    i = end
                    break
                j = match.start()
                if buf[j] == 0x5C:  # backslash: skip the escaped byte
                    if j + 1 >= end:
                        i = j  # rescan the backslash once more bytes arrive
                        break
                    i = j + 2
                    continue
                self._in_string = False
                i = j + 1
                continue

            if not self._closers:
                match = _NON_SPACE.search(buf, i)
                if match is None:
                    i = end
                    consumed = end
                    break
                j = match.start()
                if buf[j] != 0x7B:  # "{"
                    raise self._error(
                        f"expected a JSON object, got {bytes(buf[j : j + 40])!r}"
                    )
                self._start = j
                self._closers.append(0x7D)
                i = j + 1
                continue

            match = _STRUCTURAL.search(buf, i)
            if match is None:
                i = end
                break
            j = match.start()
            byte = buf[j]
            i = j + 1
            if byte == 0x22:  # '"'
                self._in_string = True
            elif byte == 0x7B:  # "{"
                self._closers.append(0x7D)
            elif byte == 0x5B:  # "["
                self._closers.append(0x5D)
            else:
                if byte != self._closers.pop():
                    raise self._error(f"mismatched {chr(byte)!r} at byte {j}")
                if not self._closers:
                    messages.append(self._decode(bytes(buf[self._start : i])))
                    self._start = -1
                    consumed = i

        self._pos = i
        if consumed:
            del buf[:consumed]
            self._pos -= consumed
            if self._start >= 0:
                self._start -= consumed
        if self._start >= 0 and len(buf) - self._start > self._max_message_bytes:
            raise self._error(
                f"message exceeds {self._max_message_bytes} bytes "
                "(the max_message_bytes limit)"
            )
        return messages

    def _decode(self, frame: bytes) -> Any:
        try:
            return json.loads(frame)
        except ValueError as exc:  # JSONDecodeError and bad UTF-8 alike
            raise self._error(f"malformed JSON ({exc})") from exc

    def _error(self, reason: str) -> OVSDBConnectionError:
        return OVSDBConnectionError(self._endpoint, f"protocol error: {reason}")


@dataclass(slots=True)
class _Pending:
    method: str
    future: asyncio.Future[dict[str, Any]]


class JSONRPCConnection:
    """One JSON-RPC 1.0 session with ovsdb-server; not reconnecting.

    The connection owns a runner task (reader plus optional keepalive prober in a
    TaskGroup) that lives until `close()` or until the peer goes away; either way every
    pending call fails with OVSDBConnectionError and `on_close` is called once.
    """

    def __init__(
        self,
        endpoint: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        on_notification: NotificationHandler | None = None,
        on_close: CloseHandler | None = None,
        probe_interval_s: float | None = None,
        max_unanswered_probes: int = 3,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        if probe_interval_s is not None and probe_interval_s <= 0:
            raise ValidationError("probe_interval_s", probe_interval_s, "> 0 or None")
        if max_unanswered_probes < 1:
            raise ValidationError(
                "max_unanswered_probes", max_unanswered_probes, ">= 1"
            )
        self._endpoint = endpoint
        self._reader = reader
        self._writer = writer
        self._on_notification = on_notification
        self._on_close = on_close
        self._probe_interval_s = probe_interval_s
        self._max_unanswered_probes = max_unanswered_probes
        self._decoder = JSONStreamDecoder(endpoint, max_message_bytes)
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._unanswered_probes = 0
        self._probe_seq = 0
        self._local_reason: str | None = None  # why we ended it, when we did
        self._close_reason: str | None = None
        self._closed = asyncio.Event()
        self._runner = asyncio.create_task(self._run(), name=f"ovsdb-rpc {endpoint}")

    @classmethod
    async def open(
        cls,
        endpoint: str,
        *,
        timeout_s: float,
        on_notification: NotificationHandler | None = None,
        on_close: CloseHandler | None = None,
        probe_interval_s: float | None = None,
        max_unanswered_probes: int = 3,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> Self:
        """Connect to `endpoint` within `timeout_s`.

        Raises ValidationError for a malformed endpoint, OVSDBTimeout when the connect
        does not finish in time and OVSDBConnectionError when it is refused.
        """
        parsed = Endpoint.parse(endpoint)
        try:
            async with asyncio.timeout(timeout_s):
                if parsed.kind == "unix":
                    reader, writer = await asyncio.open_unix_connection(parsed.path)
                else:
                    reader, writer = await asyncio.open_connection(
                        parsed.host, parsed.port
                    )
        except TimeoutError as exc:
            raise OVSDBTimeout(endpoint, "connect", timeout_s) from exc
        except OSError as exc:
            raise OVSDBConnectionError(endpoint, f"connect failed: {exc}") from exc
        return cls(
            endpoint,
            reader,
            writer,
            on_notification=on_notification,
            on_close=on_close,
            probe_interval_s=probe_interval_s,
            max_unanswered_probes=max_unanswered_probes,
            max_message_bytes=max_message_bytes,
        )

    @property
    def endpoint(self) -> str:
        return self._endpoint

    @property
    def is_closed(self) -> bool:
        """True once the connection has ended (pending calls have been failed)."""
        return self._close_reason is not None

    @property
    def close_reason(self) -> str | None:
        return self._close_reason

    async def call(
        self,
        method: str,
        params: list[Any],
        *,
        timeout_s: float,
        cancellable: bool = False,
    ) -> Any:
        """Send a request and return its `result` member.

        Raises OVSDBTimeout after `timeout_s`, OVSDBConnectionError when the connection
        is or becomes closed, OVSDBRequestError when the reply carries an `error`.
        With `cancellable` (transact only, RFC 7047 4.1.4) a request abandoned by a
        timeout or by cancellation is also cancelled on the server, so a `wait`
        operation stops blocking there; it may still have committed.
        """
        self._check_open()
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = (
            asyncio.get_running_loop().create_future()
        )
        self._pending[request_id] = _Pending(method, future)
        try:
            async with asyncio.timeout(timeout_s):
                await self._send({"method": method, "params": params, "id": request_id})
                reply = await future
        except TimeoutError as exc:
            if cancellable:
                self._send_nowait(
                    {"method": "cancel", "params": [request_id], "id": None}
                )
            raise OVSDBTimeout(self._endpoint, method, timeout_s) from exc
        except asyncio.CancelledError:
            if cancellable:
                self._send_nowait(
                    {"method": "cancel", "params": [request_id], "id": None}
                )
            raise
        finally:
            self._pending.pop(request_id, None)
            if future.done() and not future.cancelled():
                # Mark a failure that raced with the send as seen, so asyncio does
                # not report "exception was never retrieved" for it.
                future.exception()

        if reply.get("error") is not None:
            raise OVSDBRequestError(self._endpoint, method, reply["error"])
        return reply.get("result")

    async def notify(self, method: str, params: list[Any]) -> None:
        """Send a notification (a request with a null id, which gets no reply)."""
        self._check_open()
        await self._send({"method": method, "params": params, "id": None})

    async def close(self) -> None:
        """End the connection, fail pending calls and wait for the runner to finish."""
        if not self._runner.done():
            self._local_reason = self._local_reason or "closed by client"
            self._runner.cancel()
        try:
            await self._runner
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise

    async def wait_closed(self) -> str:
        """Wait until the connection has ended; return why it ended."""
        await self._closed.wait()
        return self._close_reason or "connection ended"

    def _check_open(self) -> None:
        if self._close_reason is not None:
            raise OVSDBConnectionError(self._endpoint, self._close_reason)

    async def _send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, separators=(",", ":")).encode()
        if self._writer.is_closing():
            raise OVSDBConnectionError(self._endpoint, "connection is closing")
        try:
            self._writer.write(data)
            await self._writer.drain()
        except OSError as exc:  # ConnectionResetError, BrokenPipeError, ...
            raise OVSDBConnectionError(self._endpoint, f"send failed: {exc}") from exc

    def _send_nowait(self, message: dict[str, Any]) -> None:
        """Queue a small message without waiting for the buffer to drain."""
        if self._writer.is_closing():
            return
        self._writer.write(json.dumps(message, separators=(",", ":")).encode())

    async def _run(self) -> None:
        reason = "connection ended"
        try:
            async with asyncio.TaskGroup() as tasks:
                prober = None
                if self._probe_interval_s is not None:
                    prober = tasks.create_task(self._probe(self._probe_interval_s))
                reason = await self._read_loop()
                if prober is not None:
                    prober.cancel()
        finally:
            self._shutdown(self._local_reason or reason)

    async def _read_loop(self) -> str:
        """Read and dispatch until the stream ends; return why it ended."""
        while True:
            try:
                data = await self._reader.read(_READ_CHUNK_BYTES)
            except OSError as exc:
                return f"read failed: {exc}"
            if not data:
                return "connection closed by peer"
            try:
                messages = self._decoder.feed(data)
            except OVSDBConnectionError as exc:
                return exc.reason
            for message in messages:
                problem = self._dispatch(message)
                if problem is not None:
                    return f"protocol error: {problem}"

    def _dispatch(self, message: dict[str, Any]) -> str | None:
        """Route one message; return a description when it breaks the protocol."""
        # Any traffic shows the peer is alive, not only replies to our probes.
        self._unanswered_probes = 0
        method = message.get("method")
        if method is not None:
            if not isinstance(method, str):
                return f"method is not a string: {method!r}"
            return self._handle_request(method, message)

        request_id = message.get("id")
        if "result" not in message and "error" not in message:
            return f"message is neither request nor reply: {str(message)[:200]}"
        if isinstance(request_id, str) and request_id.startswith(_PROBE_ID_PREFIX):
            return None
        pending = self._pending.get(request_id) if isinstance(request_id, int) else None
        if pending is None:
            # A reply that arrives after its caller gave up (timeout, cancel).
            log.debug(
                "ovsdb reply for no pending call endpoint=%s id=%r",
                self._endpoint,
                request_id,
            )
            return None
        if not pending.future.done():
            pending.future.set_result(message)
        return None

    def _handle_request(self, method: str, message: dict[str, Any]) -> str | None:
        request_id = message.get("id")
        params = message.get("params")
        if request_id is None:
            if self._on_notification is not None:
                try:
                    self._on_notification(method, params)
                except Exception:
                    # The connection carries every caller's requests; one faulty
                    # notification consumer must not end it for all of them.
                    log.exception(
                        "ovsdb notification handler failed endpoint=%s method=%s",
                        self._endpoint,
                        method,
                    )
            return None
        if method == "echo":
            self._send_nowait({"id": request_id, "result": params, "error": None})
            return None
        log.debug("ovsdb unknown request endpoint=%s method=%s", self._endpoint, method)
        self._send_nowait({"id": request_id, "result": None, "error": "unknown method"})
        return None

    async def _probe(self, interval_s: float) -> None:
        """Send `echo` every interval; drop the connection after N unanswered."""
        while True:
            await asyncio.sleep(interval_s)
            if self._unanswered_probes >= self._max_unanswered_probes:
                self._local_reason = (
                    f"no traffic after {self._unanswered_probes} echo probes "
                    f"sent every {interval_s:g}s"
                )
                log.warning(
                    "ovsdb keepalive failed endpoint=%s unanswered=%d interval_s=%g",
                    self._endpoint,
                    self._unanswered_probes,
                    interval_s,
                )
                # Abort, not close: an unresponsive peer may never drain our buffer.
                self._writer.transport.abort()
                return
            self._unanswered_probes += 1
            self._probe_seq += 1
            probe_id = f"{_PROBE_ID_PREFIX}{self._probe_seq}"
            self._send_nowait({"method": "echo", "params": [], "id": probe_id})

    def _shutdown(self, reason: str) -> None:
        if self._close_reason is not None:
            return
        self._close_reason = reason
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(
                    OVSDBConnectionError(self._endpoint, reason)
                )
        self._pending.clear()
        with contextlib.suppress(RuntimeError):  # the loop may be closing already
            self._writer.close()
        level = (
            logging.DEBUG if self._local_reason == "closed by client" else logging.INFO
        )
        log.log(
            level,
            "ovsdb connection closed endpoint=%s reason=%s",
            self._endpoint,
            reason,
        )
        self._closed.set()
        if self._on_close is not None:
            try:
                self._on_close(reason)
            except Exception:
                # Shutdown must finish (pending calls are already failed); the
                # handler's bug is reported here because nothing else will see it.
                log.exception("ovsdb close handler failed endpoint=%s", self._endpoint)

"""One asyncio OpenFlow 1.3 connection to one bridge, as its controller.

This module owns a connection's life and everything on it: the socket (a bridge's
`unix:<path>.mgmt` management socket or `tcp:host:port`), the HELLO and FEATURES
handshake, transaction ids, matching replies to requests, multipart reassembly,
barriers and the errors they confirm, echo in both directions, and the bounded
queue of asynchronous messages. It knows nothing about pipelines: callers build
messages (see `ofctrl.messages`) and hand them over.

States, one way only (each transition logged at INFO): NEW -> CONNECTING ->
CONNECTED -> CLOSED, and straight to CLOSED from NEW or CONNECTING when closed or
when connecting fails.

Tasks: `connect()` starts one supervisor task, owned by the channel, which runs the
reader and the echo keepalive in an `asyncio.TaskGroup`; when either ends (peer
closed, too many unanswered probes, broken framing) the group ends, every pending
request fails with `OFConnectionError`, and the channel is CLOSED. `close()` cancels
and awaits the supervisor. A channel is used once; reconnecting (with backoff) is
the owner's job: `wait_closed()` tells it when.

Error attribution: OpenFlow processes a connection's messages in order and answers
a barrier only after everything before it, errors included. So every OFPT_ERROR
that does not belong to a pending request is kept, and the next barrier reply
claims all kept errors: `barrier()` and `send_batch()` raise them as one
`ExceptionGroup` of `OFErrorReply` (use `except* OFErrorReply`). `send_batch()`
writes its messages and its barrier contiguously under the write lock, so its
errors are exactly its own plus those of plain `send()` calls since the previous
barrier. Each message's xid is left on it (`msg.xid`) to match `OFErrorReply.xid`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

from api.errors import (
    ConfigError,
    OFConnectionError,
    OFDecodeError,
    OFErrorReply,
    OFTimeout,
    OpenFlowError,
    ValidationError,
)
from ofctrl import messages
from ofctrl.codec import (
    HEADER,
    HEADER_SIZE,
    MAX_XID,
    OFP,
    OFP_VERSION,
    Dpid,
    Xid,
    decode,
    encode,
    encode_hello,
    error_names,
    error_reply,
    msg_name,
    negotiate_version,
    parse_header,
)

log = logging.getLogger(__name__)

_E = TypeVar("_E", bound=BaseException)

#: Longest unix socket path the kernel accepts (sun_path is 108 bytes with the NUL).
_UNIX_PATH_MAX = 107

#: Put in the async queue when the channel closes, to wake receive().
_CLOSED = object()

#: Switch-initiated messages that go to the async queue when no request owns them.
_ASYNC_TYPES = frozenset(
    {
        OFP.OFPT_PACKET_IN,
        OFP.OFPT_FLOW_REMOVED,
        OFP.OFPT_PORT_STATUS,
        OFP.OFPT_EXPERIMENTER,
    }
)


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """Deadlines and bounds of one channel."""

    # Bound on connect + HELLO + FEATURES_REPLY.
    connect_timeout_s: float = 5.0
    # Deadline of request(), request_multipart(), barrier() and send_batch() when
    # the caller passes none. Covers waiting for the write lock too.
    request_timeout_s: float = 10.0
    # Silence from the switch (no message at all) before an ECHO_REQUEST probe.
    echo_interval_s: float = 5.0
    # Probes in a row without any message back before the connection is dead;
    # the channel then dies after about (max + 1) * interval of silence.
    echo_max_unanswered: int = 3
    # Bound of the async queue (PACKET_IN, PORT_STATUS, FLOW_REMOVED, EXPERIMENTER).
    # When full, new messages are dropped and counted (`dropped_async`), never
    # blocking the reader: a blocked reader would also hold back barrier and
    # request replies, and deadlock a consumer that waits on one. 1024 whole
    # packet-ins of 1.5 kB stay under 2 MB, and absorb an ARP burst from a few
    # hundred containers starting at once. Drops of PORT_STATUS mean: re-read
    # ports with a port-description request.
    async_queue_size: int = 1024
    # OFPT_ERRORs kept for the next barrier. Only reached when nobody calls
    # barrier(); the oldest are dropped then (and counted in a warning).
    max_unclaimed_errors: int = 4096
    # Batches with at least this many messages are serialised in a worker thread
    # instead of on the event loop: os-ken encodes about 15-20k flow-mods/s, so
    # smaller batches stall the loop for about 30 ms at most.
    encode_in_thread_min: int = 512

    def __post_init__(self) -> None:
        for key in ("connect_timeout_s", "request_timeout_s", "echo_interval_s"):
            if not getattr(self, key) > 0:
                raise ConfigError(
                    key, getattr(self, key), "a positive number of seconds"
                )
        for key in (
            "echo_max_unanswered",
            "async_queue_size",
            "max_unclaimed_errors",
            "encode_in_thread_min",
        ):
            if getattr(self, key) < 1:
                raise ConfigError(key, getattr(self, key), "an integer >= 1")


class ChannelState(enum.StrEnum):
    NEW = "new"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"


_TRANSITIONS: dict[ChannelState, frozenset[ChannelState]] = {
    ChannelState.NEW: frozenset({ChannelState.CONNECTING, ChannelState.CLOSED}),
    ChannelState.CONNECTING: frozenset({ChannelState.CONNECTED, ChannelState.CLOSED}),
    ChannelState.CONNECTED: frozenset({ChannelState.CLOSED}),
    ChannelState.CLOSED: frozenset(),
}


class _Kind(enum.Enum):
    REPLY = "reply"  # one reply message
    MULTIPART = "multipart"  # reply parts until one without OFPMPF_REPLY_MORE
    BARRIER = "barrier"  # barrier reply; result is the claimed errors


@dataclass(slots=True)
class _Pending:
    kind: _Kind
    what: str
    future: asyncio.Future[Any]
    parts: list[Any] = field(default_factory=list)


class OpenFlowChannel(Protocol):
    """What pipeline code needs from a channel; tests fake this seam."""

    @property
    def datapath_id(self) -> Dpid: ...

    async def send(self, msg: Any) -> Xid: ...

    async def request(self, msg: Any, timeout_s: float | None = None) -> Any: ...

    async def request_multipart(
        self, msg: Any, timeout_s: float | None = None
    ) -> list[Any]: ...

    async def barrier(self, timeout_s: float | None = None) -> None: ...

    async def send_batch(
        self, msgs: Sequence[Any], timeout_s: float | None = None
    ) -> None: ...


def parse_endpoint(endpoint: str) -> tuple[str, str, int]:
    """("unix", path, 0) for "unix:/path"; ("tcp", host, port) for "tcp:h:p"."""
    scheme, _, rest = endpoint.partition(":")
    if scheme == "unix" and rest:
        if len(rest.encode()) > _UNIX_PATH_MAX:
            raise ValidationError(
                "endpoint",
                endpoint,
                f"a unix socket path of at most {_UNIX_PATH_MAX} bytes",
            )
        return "unix", rest, 0
    if scheme == "tcp":
        host, _, port = rest.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if host and port.isdigit() and 0 < int(port) < 65536:
            return "tcp", host, int(port)
    raise ValidationError("endpoint", endpoint, "unix:<path> or tcp:<host>:<port>")


class OFChannel:
    """An OpenFlow 1.3 controller connection to one switch (see module docstring).

    Use as `async with OFChannel("unix:/run/x/br-int.mgmt") as ch:`. The bridge
    must allow OpenFlow13 in its protocols column.
    """

    def __init__(self, endpoint: str, config: ChannelConfig | None = None) -> None:
        self.endpoint = endpoint
        self._address = parse_endpoint(endpoint)
        self.config = config or ChannelConfig()
        self._state = ChannelState.NEW
        self._writer: asyncio.StreamWriter | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self._failure: OFConnectionError | None = None
        # Held while writing, so a batch and its barrier stay contiguous.
        self._write_lock = asyncio.Lock()
        self._next_xid = 0
        self._pending: dict[int, _Pending] = {}
        self._unclaimed_errors: deque[OFErrorReply] = deque(
            maxlen=self.config.max_unclaimed_errors
        )
        self._unclaimed_dropped = 0
        self._last_rx = 0.0
        self._unanswered = 0
        self._features: Any = None
        self._dropping = False
        #: Async messages dropped because the queue was full (see ChannelConfig).
        self.dropped_async = 0
        # PACKET_IN, PORT_STATUS, FLOW_REMOVED and EXPERIMENTER messages, decoded,
        # then _CLOSED once the channel is closed; bounded (see ChannelConfig).
        self._async_queue: asyncio.Queue[Any] = asyncio.Queue(
            self.config.async_queue_size
        )

    # -- state ---------------------------------------------------------------

    @property
    def state(self) -> ChannelState:
        return self._state

    @property
    def datapath_id(self) -> Dpid:
        """The switch's datapath id from FEATURES_REPLY."""
        if self._features is None:
            raise OFConnectionError(
                self.endpoint, f"not connected (state {self._state})"
            )
        return Dpid(self._features.datapath_id)

    @property
    def features(self) -> Any:
        """The decoded OFPSwitchFeatures (n_tables, capabilities, ...)."""
        if self._features is None:
            raise OFConnectionError(
                self.endpoint, f"not connected (state {self._state})"
            )
        return self._features

    @property
    def failure(self) -> OFConnectionError | None:
        """Why the channel closed (None while open, or for a never-opened one)."""
        return self._failure

    def _transition(self, new: ChannelState) -> None:
        old = self._state
        if new not in _TRANSITIONS[old]:
            raise OFConnectionError(
                self.endpoint, f"channel cannot go from {old} to {new}"
            )
        self._state = new
        log.info(
            "openflow channel state endpoint=%s old=%s new=%s", self.endpoint, old, new
        )

    # -- life cycle ----------------------------------------------------------

    async def connect(self) -> None:
        """Connect, exchange HELLO (1.3 or OFVersionMismatch), read FEATURES.

        Raises OFConnectionError, OFVersionMismatch or OFTimeout; a failed channel
        is CLOSED and cannot be reused.
        """
        self._transition(ChannelState.CONNECTING)
        timeout_s = self.config.connect_timeout_s
        deadline = asyncio.timeout(timeout_s)
        try:
            async with deadline:
                reader, writer = await self._open()
                self._writer = writer
                writer.write(encode_hello(self._alloc_xid()))
                hello = await self._read_message(reader)
                header = parse_header(hello)
                if header.msg_type != OFP.OFPT_HELLO:
                    raise OFConnectionError(
                        self.endpoint, f"expected OFPT_HELLO, got {header.type_name}"
                    )
                negotiate_version(self.endpoint, hello)

                self._last_rx = asyncio.get_running_loop().time()
                self._supervisor = asyncio.create_task(
                    self._run(reader), name=f"ofctrl {self.endpoint}"
                )
                features = await self.request(messages.features_request(), timeout_s)
        except OpenFlowError as exc:
            await self._abort(exc)
            raise
        except TimeoutError as exc:
            if deadline.expired():
                timeout = OFTimeout(self.endpoint, "HELLO/FEATURES", timeout_s)
                await self._abort(timeout)
                raise timeout from exc
            await self._abort(exc)
            raise
        except OSError as exc:
            error = OFConnectionError(self.endpoint, f"cannot connect: {exc}")
            await self._abort(error)
            raise error from exc
        except BaseException as exc:
            await self._abort(exc)
            raise

        self._features = features
        self._transition(ChannelState.CONNECTED)
        log.info(
            "openflow connected endpoint=%s dpid=%016x version=0x%02x n_tables=%d",
            self.endpoint,
            features.datapath_id,
            OFP_VERSION,
            features.n_tables,
        )

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        scheme, host_or_path, port = self._address
        if scheme == "unix":
            return await asyncio.open_unix_connection(host_or_path)
        return await asyncio.open_connection(host_or_path, port)

    async def close(self) -> None:
        """Stop the reader and keepalive, fail pending requests, close the socket.

        Idempotent.
        """
        task = self._supervisor
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                # Our own cancel of the supervisor is expected; a cancel of the
                # caller is not ours to swallow.
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
        self._teardown(OFConnectionError(self.endpoint, "channel closed"))
        await self._wait_writer_closed()

    async def _abort(self, exc: BaseException) -> None:
        # A failed connect(): record why (for `failure`), then as close().
        reason = exc.reason if isinstance(exc, OFConnectionError) else str(exc)
        self._teardown(OFConnectionError(self.endpoint, f"connect failed: {reason}"))
        await self.close()

    async def wait_closed(self) -> OFConnectionError | None:
        """Wait until the channel is CLOSED; return why (see `failure`)."""
        await self._closed.wait()
        return self._failure

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _run(self, reader: asyncio.StreamReader) -> None:
        """Supervisor: reader and keepalive under one TaskGroup; tear down after."""
        failure: OFConnectionError | None = None
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._read_loop(reader), name="ofctrl-read")
                group.create_task(self._keepalive_loop(), name="ofctrl-echo")
        except* OFConnectionError as eg:
            failure = failure or _first(eg, OFConnectionError)
        except* OFDecodeError as eg:
            # Only header framing errors get here; the stream cannot be resynced.
            reason = f"lost framing: {_first(eg, OFDecodeError)}"
            failure = failure or OFConnectionError(self.endpoint, reason)
        except* OSError as eg:
            reason = f"socket error: {_first(eg, OSError)!r}"
            failure = failure or OFConnectionError(self.endpoint, reason)
        except* Exception as eg:
            # A bug in dispatch: the channel is in an unknown state, so it ends
            # like a lost connection, and the owner reconnects.
            log.error(
                "openflow channel internal error endpoint=%s",
                self.endpoint,
                exc_info=eg,
            )
            reason = f"internal error: {_first(eg, Exception)!r}"
            failure = failure or OFConnectionError(self.endpoint, reason)
        finally:
            if failure is not None:
                log.warning(
                    "openflow channel lost endpoint=%s reason=%s",
                    self.endpoint,
                    failure.reason,
                )
            self._teardown(
                failure or OFConnectionError(self.endpoint, "channel closed")
            )

    def _teardown(self, failure: OFConnectionError) -> None:
        """Fail pending requests, close the socket, go CLOSED; idempotent."""
        if self._failure is None:
            self._failure = failure
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(
                    OFConnectionError(self.endpoint, self._failure.reason)
                )
        self._pending.clear()
        if self._writer is not None:
            self._writer.close()
        if self._state is not ChannelState.CLOSED:
            # Wake receive(): make room for the marker if the queue is full.
            if self._async_queue.full():
                self._async_queue.get_nowait()
                self.dropped_async += 1
            self._async_queue.put_nowait(_CLOSED)
            self._transition(ChannelState.CLOSED)
        self._closed.set()

    async def _wait_writer_closed(self) -> None:
        if self._writer is None:
            return
        try:
            async with asyncio.timeout(1.0):
                await self._writer.wait_closed()
        except (OSError, TimeoutError):
            # The socket is closed on our side already; a peer that does not
            # finish the shutdown in time changes nothing for us.
            pass

    # -- async messages ------------------------------------------------------

    async def receive(self, timeout_s: float | None = None) -> Any:
        """The next PACKET_IN, PORT_STATUS, FLOW_REMOVED or EXPERIMENTER message.

        Messages received before the channel closed are still delivered; then
        OFConnectionError. OFTimeout when nothing arrives within `timeout_s`
        (None: wait without a deadline, e.g. in a consumer task).
        """
        deadline = asyncio.timeout(timeout_s)
        try:
            async with deadline:
                msg = await self._async_queue.get()
        except TimeoutError as exc:
            if deadline.expired() and timeout_s is not None:
                raise OFTimeout(self.endpoint, "async message", timeout_s) from exc
            raise
        if msg is _CLOSED:
            self._async_queue.put_nowait(_CLOSED)  # for any other receiver
            reason = self._failure.reason if self._failure else "channel closed"
            raise OFConnectionError(self.endpoint, reason)
        return msg

    @property
    def async_backlog(self) -> int:
        """Async messages waiting to be received."""
        return self._async_queue.qsize()

    # -- requests ------------------------------------------------------------

    async def send(self, msg: Any) -> Xid:
        """Write one message that expects no reply; return its xid.

        Errors it causes are raised by the next `barrier()`.
        """
        async with self._write_lock:
            xid = self._alloc_xid()
            self._write(encode(msg, xid))
            await self._drain()
        return xid

    async def request(self, msg: Any, timeout_s: float | None = None) -> Any:
        """Send `msg` and return the one reply with its xid (decoded).

        OFPT_ERROR for it raises OFErrorReply; OFTimeout after `timeout_s`;
        OFConnectionError when the channel closes first.
        """
        return await self._transact((), msg, _Kind.REPLY, timeout_s)

    async def request_multipart(
        self, msg: Any, timeout_s: float | None = None
    ) -> list[Any]:
        """Send a multipart request; return every reply part (until one arrives
        without OFPMPF_REPLY_MORE). Errors as for `request`."""
        parts: list[Any] = await self._transact((), msg, _Kind.MULTIPART, timeout_s)
        return parts

    async def barrier(self, timeout_s: float | None = None) -> None:
        """Wait until the switch has processed everything sent before.

        Raises `ExceptionGroup[OFErrorReply]` holding every OFPT_ERROR that arrived
        since the previous barrier for messages that were not requests.
        """
        barrier = messages.barrier_request()
        errors = await self._transact((), barrier, _Kind.BARRIER, timeout_s)
        self._raise_errors(errors, barrier.xid, 0)

    async def send_batch(
        self, msgs: Sequence[Any], timeout_s: float | None = None
    ) -> None:
        """Write `msgs` then one barrier, contiguously; wait for the barrier.

        Raises `ExceptionGroup[OFErrorReply]` if any message failed (match
        `OFErrorReply.xid` with `msg.xid`); the switch still applied the others.
        """
        barrier = messages.barrier_request()
        errors = await self._transact(msgs, barrier, _Kind.BARRIER, timeout_s)
        self._raise_errors(errors, barrier.xid, len(msgs))

    def _raise_errors(self, errors: list[OFErrorReply], xid: int, sent: int) -> None:
        if self._unclaimed_dropped:
            log.warning(
                "openflow error replies dropped before barrier endpoint=%s dropped=%d",
                self.endpoint,
                self._unclaimed_dropped,
            )
            self._unclaimed_dropped = 0
        if errors:
            batch = f" (batch of {sent})" if sent else ""
            raise ExceptionGroup(
                f"openflow {self.endpoint}: {len(errors)} error replies before "
                f"barrier xid={xid}{batch}",
                errors,
            )

    async def _transact(
        self, msgs: Sequence[Any], final: Any, kind: _Kind, timeout_s: float | None
    ) -> Any:
        """Write `msgs` and `final` contiguously; return the result for `final`."""
        timeout_s = self.config.request_timeout_s if timeout_s is None else timeout_s
        self._open_writer()
        xid = self._alloc_xid()
        what = f"{type(final).__name__} xid={xid}"
        pending = _Pending(kind, what, asyncio.get_running_loop().create_future())
        self._pending[xid] = pending
        deadline = asyncio.timeout(timeout_s)
        try:
            async with deadline:
                async with self._write_lock:
                    data = await self._encode_many(msgs)
                    self._write(data + encode(final, xid))
                    await self._drain()
                return await pending.future
        except TimeoutError as exc:
            if deadline.expired():
                raise OFTimeout(self.endpoint, what, timeout_s) from exc
            raise
        finally:
            self._pending.pop(xid, None)
            if pending.future.done() and not pending.future.cancelled():
                # Mark a result nobody awaits any more (we were cancelled) as seen.
                pending.future.exception()
            else:
                pending.future.cancel()

    async def _encode_many(self, msgs: Sequence[Any]) -> bytes:
        if not msgs:
            return b""
        xids = [self._alloc_xid() for _ in msgs]
        if len(msgs) >= self.config.encode_in_thread_min:
            return await asyncio.to_thread(_encode_all, msgs, xids)
        return _encode_all(msgs, xids)

    def _alloc_xid(self) -> Xid:
        # 1..MAX_XID, wrapping; 0 is what switches use for unsolicited messages.
        while True:
            self._next_xid = self._next_xid % MAX_XID + 1
            if self._next_xid not in self._pending:
                return Xid(self._next_xid)

    # -- socket --------------------------------------------------------------

    def _open_writer(self) -> asyncio.StreamWriter:
        """The writer of an open channel; OFConnectionError otherwise."""
        writer = self._writer
        if (
            self._state not in (ChannelState.CONNECTING, ChannelState.CONNECTED)
            or writer is None
            or writer.is_closing()
        ):
            reason = self._failure.reason if self._failure else f"state {self._state}"
            raise OFConnectionError(self.endpoint, f"channel not open: {reason}")
        return writer

    def _write(self, data: bytes) -> None:
        self._open_writer().write(data)

    async def _drain(self) -> None:
        try:
            await self._open_writer().drain()
        except OSError as exc:
            raise OFConnectionError(self.endpoint, f"write failed: {exc}") from exc

    async def _read_message(self, reader: asyncio.StreamReader) -> bytes:
        try:
            head = await reader.readexactly(HEADER_SIZE)
            header = parse_header(head)
            body = await reader.readexactly(header.length - HEADER_SIZE)
        except asyncio.IncompleteReadError as exc:
            raise OFConnectionError(
                self.endpoint, "connection closed by the switch"
            ) from exc
        except OSError as exc:
            raise OFConnectionError(self.endpoint, f"connection lost: {exc}") from exc
        return head + body

    # -- reader and keepalive ------------------------------------------------

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        loop = asyncio.get_running_loop()
        while True:
            buf = await self._read_message(reader)
            self._last_rx = loop.time()
            self._unanswered = 0
            self._dispatch(buf)

    async def _keepalive_loop(self) -> None:
        interval = self.config.echo_interval_s
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            if loop.time() - self._last_rx < interval:
                continue  # heard from the switch recently
            if self._unanswered >= self.config.echo_max_unanswered:
                raise OFConnectionError(
                    self.endpoint,
                    f"no answer to {self._unanswered} echo probes "
                    f"({loop.time() - self._last_rx:.1f}s silent)",
                )
            self._unanswered += 1
            xid = self._alloc_xid()
            self._write(
                HEADER.pack(OFP_VERSION, OFP.OFPT_ECHO_REQUEST, HEADER_SIZE, xid)
            )

    def _dispatch(self, buf: bytes) -> None:
        header = parse_header(buf)
        msg_type, xid = header.msg_type, header.xid
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "openflow rx endpoint=%s type=%s xid=%d len=%d",
                self.endpoint,
                header.type_name,
                xid,
                header.length,
            )

        if msg_type == OFP.OFPT_ECHO_REQUEST:
            # Echo the payload back with the same xid (OpenFlow 1.3.1, 7.5.2);
            # written around the lock, a reply can sit inside a batch harmlessly.
            reply = buf[HEADER_SIZE:]
            self._write(
                HEADER.pack(
                    OFP_VERSION, OFP.OFPT_ECHO_REPLY, HEADER_SIZE + len(reply), xid
                )
                + reply
            )
            return
        if msg_type == OFP.OFPT_ECHO_REPLY:
            return  # liveness is recorded for every message by the read loop

        pending = None if msg_type in _ASYNC_TYPES else self._pending.get(xid)
        try:
            msg = decode(buf)
        except OFDecodeError as exc:
            if pending is not None:
                self._settle(xid, pending, exc=exc)
            else:
                log.warning(
                    "openflow undecodable message dropped endpoint=%s type=%s xid=%d "
                    "reason=%s",
                    self.endpoint,
                    header.type_name,
                    xid,
                    exc.reason,
                )
            return

        if msg_type == OFP.OFPT_ERROR:
            self._on_error(xid, pending, error_reply(msg))
        elif pending is not None:
            self._on_reply(xid, pending, msg)
        elif msg_type in _ASYNC_TYPES:
            self._enqueue(msg)
        else:
            # Typically a late reply to a request that timed out.
            log.debug(
                "openflow unmatched message dropped endpoint=%s type=%s xid=%d",
                self.endpoint,
                header.type_name,
                xid,
            )

    def _on_error(self, xid: int, pending: _Pending | None, err: OFErrorReply) -> None:
        if log.isEnabledFor(logging.DEBUG):
            type_name, code_name = error_names(err.err_type, err.code)
            log.debug(
                "openflow error reply endpoint=%s xid=%d type=%s code=%s request=%s",
                self.endpoint,
                xid,
                type_name,
                code_name,
                pending is not None,
            )
        if pending is not None:
            self._settle(xid, pending, exc=err)
            return
        if len(self._unclaimed_errors) == self._unclaimed_errors.maxlen:
            self._unclaimed_dropped += 1
        self._unclaimed_errors.append(err)

    def _on_reply(self, xid: int, pending: _Pending, msg: Any) -> None:
        if pending.kind is _Kind.BARRIER:
            if msg.msg_type != OFP.OFPT_BARRIER_REPLY:
                return
            claimed = list(self._unclaimed_errors)
            self._unclaimed_errors.clear()
            self._settle(xid, pending, result=claimed)
        elif pending.kind is _Kind.MULTIPART:
            if msg.msg_type != OFP.OFPT_MULTIPART_REPLY:
                return
            pending.parts.append(msg)
            if not msg.flags & OFP.OFPMPF_REPLY_MORE:
                self._settle(xid, pending, result=pending.parts)
        else:
            self._settle(xid, pending, result=msg)

    def _settle(
        self,
        xid: int,
        pending: _Pending,
        result: Any = None,
        exc: BaseException | None = None,
    ) -> None:
        self._pending.pop(xid, None)
        if pending.future.done():
            return  # the requester gave up (timeout, cancel) in the meantime
        if exc is not None:
            pending.future.set_exception(exc)
        else:
            pending.future.set_result(result)

    def _enqueue(self, msg: Any) -> None:
        try:
            self._async_queue.put_nowait(msg)
        except asyncio.QueueFull:
            self.dropped_async += 1
            if not self._dropping:
                self._dropping = True
                log.warning(
                    "openflow async queue full, dropping endpoint=%s size=%d type=%s",
                    self.endpoint,
                    self._async_queue.maxsize,
                    msg_name(msg.msg_type),
                )
            return
        if self._dropping:
            self._dropping = False
            log.info(
                "openflow async queue accepting again endpoint=%s dropped_total=%d",
                self.endpoint,
                self.dropped_async,
            )


def _encode_all(msgs: Sequence[Any], xids: Sequence[int]) -> bytes:
    return b"".join(encode(msg, xid) for msg, xid in zip(msgs, xids, strict=True))


def _first(group: BaseExceptionGroup[_E], kind: type[_E]) -> _E:
    """The first leaf exception of `group` (groups nest when TaskGroups do)."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    assert isinstance(exc, kind)
    return exc

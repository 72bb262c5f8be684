"""EtcdStore: the Store contract on etcd v3 through aetcd (gRPC).

Implemented: get, paged range pinned to one revision, txn comparing
mod_revision (0 compares ``version == 0``: key absent), prefix watch that
re-watches from the last delivered revision after a broken stream, history
compaction, and the lease primitives leader election needs (grant, one
keepalive, put with lease, revoke). aetcd and gRPC exceptions are translated
here and nowhere else.

Partial: several endpoints are tried in order at connect time only; once
connected the store stays on that endpoint (gRPC reconnects to it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any, Self

import aetcd
from aetcd import rpc

from api.errors import (
    ConfigError,
    NotFoundError,
    StoreCompactedError,
    StoreError,
    StoreUnavailableError,
    ValidationError,
)
from netmaster.store.base import (
    Compare,
    Event,
    EventType,
    KeyValue,
    Op,
    Put,
    TxnResult,
)
from netmaster.store.keyspace import check_key, check_txn, encode_key, prefix_end

log = logging.getLogger(__name__)

#: Keys fetched per Range call; a range of more keys is read in pages, all at
#: the revision of the first page.
_RANGE_PAGE = 1_000

_CHANNEL_OPTIONS: dict[str, int] = {
    # Only the endpoints we were given: never route through an http_proxy
    # taken from the environment.
    "grpc.enable_http_proxy": 0,
    # A large range page must not hit gRPC's 4 MiB receive default.
    "grpc.max_receive_message_length": 64 * 1024 * 1024,
    # Pings find a dead peer under a silent watch stream. etcd refuses pings
    # more often than every 5 s (--grpc-keepalive-min-time).
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
}

_TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    aetcd.ConnectionFailedError,
    aetcd.ConnectionTimeoutError,
    aetcd.WatchTimeoutError,
    TimeoutError,
)
_CLIENT_ERRORS: tuple[type[Exception], ...] = (
    aetcd.ClientError,
    rpc.RpcError,
    rpc.BaseError,
)


class EtcdStore:
    """The Store contract on an etcd v3 cluster, with optional key namespace.

    Connect with ``await EtcdStore.connect(["127.0.0.1:2379"], timeout_s)``.
    Every request carries a ``timeout_s`` deadline. Failures to reach etcd
    raise StoreUnavailableError; other etcd failures StoreError. With a
    ``namespace``, every key is stored under that prefix and returned without
    it.
    """

    def __init__(
        self,
        client: aetcd.Client,
        endpoint: str,
        namespace: str,
        timeout_s: float,
        watch_retry_budget_s: float,
    ) -> None:
        self._client = client
        self._endpoint = endpoint
        self._namespace = encode_key(namespace)
        self._timeout_s = timeout_s
        self._watch_retry_budget_s = watch_retry_budget_s
        self._closed = False

    @classmethod
    async def connect(
        cls,
        endpoints: Sequence[str],
        timeout_s: float = 5.0,
        *,
        namespace: str = "",
        watch_retry_budget_s: float = 30.0,
    ) -> Self:
        """Connect to the first endpoint (``host:port``) that answers a read.

        Raises ConfigError for a malformed endpoint and StoreUnavailableError
        when no endpoint answers within ``timeout_s`` each.
        """
        if not endpoints:
            raise ConfigError("store", list(endpoints), "at least one host:port")
        parsed = [parse_endpoint(endpoint) for endpoint in endpoints]

        last_error: Exception | None = None
        for endpoint, (host, port) in zip(endpoints, parsed, strict=True):
            client = aetcd.Client(
                host, port, timeout=timeout_s, options=dict(_CHANNEL_OPTIONS)
            )
            store = cls(client, endpoint, namespace, timeout_s, watch_retry_budget_s)
            try:
                await store._unary("connect", client.connect)
                await store._current_revision()
            except StoreError as exc:
                log.info("etcd endpoint unusable endpoint=%s reason=%s", endpoint, exc)
                last_error = exc
                await store.close()
                continue
            except BaseException:
                # Cancelled mid-connect: do not leave the channel open.
                await store.close()
                raise
            log.info(
                "etcd store connected endpoint=%s namespace=%s", endpoint, namespace
            )
            return store

        raise StoreUnavailableError(
            f"no etcd endpoint of {list(endpoints)} answered within {timeout_s}s; "
            "check that etcd runs and listens there"
        ) from last_error

    async def get(self, key: str) -> KeyValue | None:
        check_key(key)
        request = rpc.RangeRequest(key=self._key(key))
        response = await self._unary("get", self._kv_call("Range", request))
        if not response.kvs:
            return None
        return self._key_value(response.kvs[0])

    async def range(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key under ``prefix`` sorted by key, and the revision read at."""
        start, end = self._bounds(prefix)
        kvs: list[KeyValue] = []
        revision = 0
        while True:
            request = rpc.RangeRequest(
                key=start,
                range_end=end,
                limit=_RANGE_PAGE,
                revision=revision,
                sort_order=rpc.RangeRequest.ASCEND,
                sort_target=rpc.RangeRequest.KEY,
            )
            response = await self._unary("range", self._kv_call("Range", request))
            revision = revision or int(response.header.revision)
            kvs.extend(self._key_value(kv) for kv in response.kvs)
            if not response.more:
                return kvs, revision
            # Next page starts just after the last key of this one.
            start = bytes(response.kvs[-1].key) + b"\x00"

    async def txn(self, compares: Sequence[Compare], ops: Sequence[Op]) -> TxnResult:
        """Apply ``ops`` atomically if every compare holds; else apply nothing."""
        return await self._txn(compares, ops, lease_id=0)

    async def _txn(
        self, compares: Sequence[Compare], ops: Sequence[Op], lease_id: int
    ) -> TxnResult:
        check_txn(compares, ops)
        request = rpc.TxnRequest(
            compare=[self._compare(c) for c in compares],
            success=[self._request_op(op, lease_id) for op in ops],
            failure=[],
        )
        response = await self._unary("txn", self._kv_call("Txn", request))
        result = TxnResult(bool(response.succeeded), int(response.header.revision))
        log.debug(
            "txn done succeeded=%s revision=%d ops=%d",
            result.succeeded,
            result.revision,
            len(ops),
        )
        return result

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[Event]:
        """Events under ``prefix`` from ``start_revision`` on, in revision order.

        ``start_revision < 1`` means from the next write on. A broken stream
        (etcd restarted, connection lost) is re-watched from the last
        delivered event on, so nothing is lost or repeated; when etcd stays
        unreachable for ``watch_retry_budget_s``, StoreUnavailableError ends
        the watch. Raises StoreCompactedError when the history asked for is
        gone. Ends when the store closes. Use ``contextlib.aclosing`` to stop
        early, so the server-side watch is cancelled at once.
        """
        self._check_open()
        revision = start_revision
        if revision < 1:
            revision = await self._current_revision() + 1
        start, end = self._bounds(prefix)
        # Events already delivered at ``revision``: a re-watch starts at that
        # revision again and skips them, so a transaction is never split.
        delivered = 0
        outage_since: float | None = None
        delays = _rewatch_delays()

        while not self._closed:
            try:
                watch = await self._client.watch(
                    start, range_end=end, start_revision=revision
                )
            except aetcd.RevisionCompactedError as exc:
                raise StoreCompactedError(revision, exc.compacted_revision) from exc
            except _TRANSIENT_ERRORS as exc:
                outage_since = await self._before_rewatch(
                    exc, prefix, revision, outage_since, delays
                )
                continue
            except _CLIENT_ERRORS as exc:
                raise _translate(exc, self._endpoint, "watch") from exc

            outage_since = None
            delays = _rewatch_delays()
            skip = delivered
            try:
                async for raw in watch:
                    event = self._event(raw)
                    if event.mod_revision == revision and skip:
                        skip -= 1
                        continue
                    if event.mod_revision != revision:
                        revision, delivered = event.mod_revision, 0
                    delivered += 1
                    yield event
                # The stream ended without an error: the store closed, or the
                # server dropped it; the loop condition tells which.
                if not self._closed:
                    log.info("etcd watch stream ended prefix=%s", prefix)
            except aetcd.RevisionCompactedError as exc:
                raise StoreCompactedError(revision, exc.compacted_revision) from exc
            except _TRANSIENT_ERRORS as exc:
                outage_since = await self._before_rewatch(
                    exc, prefix, revision, outage_since, delays
                )
            except _CLIENT_ERRORS as exc:
                raise _translate(exc, self._endpoint, "watch") from exc
            finally:
                if not self._closed:
                    with contextlib.suppress(*_CLIENT_ERRORS):
                        await watch.cancel()

    async def _before_rewatch(
        self,
        exc: Exception,
        prefix: str,
        revision: int,
        outage_since: float | None,
        delays: Iterator[float],
    ) -> float:
        """Sleep before the next watch attempt, or raise when the budget is spent."""
        now = asyncio.get_running_loop().time()
        outage_since = now if outage_since is None else outage_since
        if self._closed:
            return outage_since
        if now - outage_since > self._watch_retry_budget_s:
            raise StoreUnavailableError(
                f"etcd {self._endpoint}: watch of {prefix!r} broke and etcd stayed "
                f"unreachable for {self._watch_retry_budget_s}s: {exc}"
            ) from exc
        delay_s = next(delays)
        log.info(
            "etcd watch broke, re-watching prefix=%s from_revision=%d delay_s=%.2f "
            "reason=%s",
            prefix,
            revision,
            delay_s,
            exc,
        )
        await asyncio.sleep(delay_s)
        return outage_since

    async def compact(self, revision: int) -> None:
        """Compact etcd's history below ``revision`` (keyspace-wide, not namespaced).

        A no-op when that history is gone already; ValidationError when
        ``revision`` is beyond the current one.
        """
        self._check_open()
        try:
            await self._client.compact(revision)
        except _CLIENT_ERRORS as exc:
            detail = str(exc)
            if _status(exc) == rpc.StatusCode.OUT_OF_RANGE:
                if "future revision" in detail:
                    raise ValidationError(
                        "revision", revision, "at most the current store revision"
                    ) from exc
                if "compacted" in detail:
                    return
            raise _translate(exc, self._endpoint, "compact") from exc

    async def grant_lease(self, ttl_s: int) -> int:
        """Grant a lease of ``ttl_s`` seconds; returns its id."""
        request = rpc.LeaseGrantRequest(TTL=ttl_s)
        response = await self._unary(
            "grant lease", self._stub_call("leasestub", "LeaseGrant", request)
        )
        if response.error:
            raise StoreError(f"etcd {self._endpoint}: grant lease: {response.error}")
        return int(response.ID)

    async def keepalive_once(self, lease_id: int) -> int:
        """Refresh a lease once; returns its TTL in seconds.

        Raises NotFoundError when the lease expired or was revoked.
        """
        self._check_open()
        reply = await self._unary(
            "keepalive", functools.partial(self._client.refresh_lease, lease_id)
        )
        if reply is None or reply.TTL <= 0:
            raise _lease_not_found(lease_id)
        return int(reply.TTL)

    async def put_with_lease(
        self,
        key: str,
        value: bytes,
        lease_id: int,
        compares: Sequence[Compare] = (),
    ) -> TxnResult:
        """Put ``key`` tied to a lease (deleted when it ends), if compares hold.

        ``compares=[Compare(key, 0)]`` creates the key only if absent, the
        building block of leader election. Raises NotFoundError when the
        lease is gone.
        """
        try:
            return await self._txn(compares, [Put(key, value)], lease_id)
        except StoreError as exc:
            if _status(exc.__cause__) == rpc.StatusCode.NOT_FOUND:
                raise _lease_not_found(lease_id) from exc
            raise

    async def revoke_lease(self, lease_id: int) -> None:
        """End a lease and delete its keys; a no-op when it is gone already."""
        request = rpc.LeaseRevokeRequest(ID=lease_id)
        try:
            await self._unary(
                "revoke lease", self._stub_call("leasestub", "LeaseRevoke", request)
            )
        except StoreError as exc:
            if _status(exc.__cause__) != rpc.StatusCode.NOT_FOUND:
                raise

    async def close(self) -> None:
        """Close the connection; watches end. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._client.close()
        except _CLIENT_ERRORS as exc:
            raise _translate(exc, self._endpoint, "close") from exc

    async def _current_revision(self) -> int:
        request = rpc.RangeRequest(key=b"\x00", count_only=True)
        response = await self._unary("read revision", self._kv_call("Range", request))
        return int(response.header.revision)

    def _kv_call(self, method: str, request: Any) -> Callable[[], Awaitable[Any]]:
        return self._stub_call("kvstub", method, request)

    def _stub_call(
        self, stub: str, method: str, request: Any
    ) -> Callable[[], Awaitable[Any]]:
        """One request on an aetcd gRPC stub, with this store's deadline."""
        self._check_open()
        call = getattr(getattr(self._client, stub), method)
        return functools.partial(call, request, timeout=self._timeout_s)

    async def _unary(self, what: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """Await one request, translating every aetcd and gRPC failure."""
        try:
            return await call()
        except _CLIENT_ERRORS as exc:
            raise _translate(exc, self._endpoint, what) from exc

    def _check_open(self) -> None:
        # aetcd reconnects on use, so a closed store must refuse up front.
        if self._closed:
            raise StoreError(f"etcd {self._endpoint}: the store is closed")

    def _key(self, key: str) -> bytes:
        return self._namespace + encode_key(key)

    def _bounds(self, prefix: str) -> tuple[bytes, bytes]:
        """Range start and end for every key under ``prefix``."""
        start = self._key(prefix)
        # etcd reads range_end "\0" as "every key from start on".
        end = prefix_end(start)
        return (start or b"\x00"), (end or b"\x00")

    def _user_key(self, key: bytes) -> str:
        return bytes(key[len(self._namespace) :]).decode("utf-8")

    def _key_value(self, kv: Any) -> KeyValue:
        return KeyValue(
            self._user_key(kv.key),
            bytes(kv.value),
            int(kv.create_revision),
            int(kv.mod_revision),
        )

    def _event(self, raw: Any) -> Event:
        kind = EventType.PUT if raw.kind == aetcd.EventKind.PUT else EventType.DELETE
        value = bytes(raw.kv.value) if kind is EventType.PUT else b""
        return Event(kind, self._user_key(raw.kv.key), value, int(raw.kv.mod_revision))

    def _compare(self, compare: Compare) -> Any:
        key = self._key(compare.key)
        if compare.mod_revision == 0:
            return rpc.Compare(
                key=key,
                target=rpc.Compare.VERSION,
                result=rpc.Compare.EQUAL,
                version=0,
            )
        return rpc.Compare(
            key=key,
            target=rpc.Compare.MOD,
            result=rpc.Compare.EQUAL,
            mod_revision=compare.mod_revision,
        )

    def _request_op(self, op: Op, lease_id: int) -> Any:
        key = self._key(op.key)
        if isinstance(op, Put):
            put = rpc.PutRequest(key=key, value=op.value, lease=lease_id)
            return rpc.RequestOp(request_put=put)
        return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """``host:port`` (IPv6 as ``[addr]:port``) to host and port; else ConfigError."""
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError("store", endpoint, "host:port with a port in 1-65535")
    return host, int(port)


def _rewatch_delays() -> Iterator[float]:
    """Jittered exponential delays between watch attempts, 0.1 s up to 2 s."""
    delay_s = 0.1
    while True:
        yield delay_s * random.uniform(0.5, 1.0)
        delay_s = min(delay_s * 2, 2.0)


def _status(exc: BaseException | None) -> Any:
    """The gRPC status code behind an aetcd or gRPC error, if there is one."""
    for candidate in (exc, exc.__cause__ if exc else None):
        if isinstance(candidate, rpc.AioRpcError):
            return candidate.code()
    return None


def _lease_not_found(lease_id: int) -> NotFoundError:
    return NotFoundError(
        "lease", f"{lease_id:x}", "it expired or was revoked; grant a new one"
    )


def _translate(exc: Exception, endpoint: str, what: str) -> StoreError:
    if isinstance(exc, rpc.AioRpcError):
        detail = f"{exc.code().name}: {exc.details()}"
    else:
        detail = str(exc) or type(exc).__name__
    if isinstance(exc, _TRANSIENT_ERRORS) or _status(exc) in (
        rpc.StatusCode.UNAVAILABLE,
        rpc.StatusCode.DEADLINE_EXCEEDED,
    ):
        return StoreUnavailableError(
            f"etcd {endpoint}: {what} failed: {detail}; "
            "check that etcd runs and is reachable"
        )
    return StoreError(f"etcd {endpoint}: {what} failed: {detail}")

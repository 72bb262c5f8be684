"""The netmaster REST client every front end shares (netctl, the agent): aiohttp.

Errors netmaster answers with become RemoteError carrying its status and the
server's error class and message; a netmaster that cannot be reached is a
RemoteError with status 0 whose message names the URL.

Given several replicas (``http://a:9999,http://b:9999``), a request that
cannot reach one, or gets 503 (no leader yet, leader just died), is retried on
the next with a short backoff until ``retry_budget_s`` is spent; the replica
that answered is used first next time. Writes are safe to repeat: creates are
keyed (a repeated endpoint create returns the same endpoint) and a repeated
DELETE whose first attempt landed answers 404, reported as such.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Self

import aiohttp

from api.errors import RemoteError
from api.models import Endpoint, EndpointRequest, Host, Network, Tenant

log = logging.getLogger(__name__)

SERVICE = "netmaster"
#: Audit headers netmaster's IPAM ledger records (who changed it, and why).
ACTOR_HEADER = "X-Netplugin-Actor"
REASON_HEADER = "X-Netplugin-Reason"


#: Statuses that mean "this replica cannot serve it now; another may".
RETRY_STATUSES = frozenset({502, 503, 504})
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 1.0


def parse_urls(text: str) -> list[str]:
    """``http://a:9999,http://b:9999`` -> both, without trailing slashes."""
    urls = [u.strip().rstrip("/") for u in text.split(",") if u.strip()]
    if not urls or not all(u.startswith(("http://", "https://")) for u in urls):
        raise ValueError(f"{text!r}: expected http://host:port[,http://host:port]")
    return urls


class NetmasterClient:
    """A session to netmaster; use as ``async with NetmasterClient(url) as c``.

    ``base_url`` may list several replicas separated by commas.
    """

    def __init__(
        self,
        base_url: str,
        timeout_s: float = 10.0,
        retry_budget_s: float = 15.0,
        actor: str = "",
    ) -> None:
        self.urls = parse_urls(base_url)
        #: Who netmaster's IPAM ledger records for this client's changes.
        self.actor = actor
        self.timeout_s = timeout_s
        self.retry_budget_s = retry_budget_s
        self._session: aiohttp.ClientSession | None = None

    @property
    def base_url(self) -> str:
        """The replica tried first: the one that answered last."""
        return self.urls[0]

    def _rotate(self) -> None:
        self.urls.append(self.urls.pop(0))

    async def __aenter__(self) -> Self:
        headers = {ACTOR_HEADER: self.actor} if self.actor else None
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout_s), headers=headers
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("NetmasterClient used outside 'async with'")
        return self._session

    async def request(
        self, method: str, path: str, body: Any = None, reason: str = ""
    ) -> Any:
        """One API call, retried across replicas while they are unavailable.

        ``reason`` is recorded in the IPAM ledger for allocations and releases.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_budget_s
        backoff = BACKOFF_MIN_S
        while True:
            try:
                return await self._request_once(method, path, body, reason)
            except RemoteError as exc:
                if exc.status not in RETRY_STATUSES and exc.status != 0:
                    raise
                if loop.time() + backoff > deadline:
                    raise
                log.info(
                    "netmaster unavailable, retrying url=%s status=%d error=%s",
                    self.base_url,
                    exc.status,
                    exc.message,
                )
                self._rotate()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _request_once(
        self, method: str, path: str, body: Any, reason: str
    ) -> Any:
        url = f"{self.base_url}/api/v1/{path.lstrip('/')}"
        headers = {REASON_HEADER: reason} if reason else None
        try:
            async with self.session.request(
                method, url, json=body, headers=headers
            ) as response:
                text = await response.text()
                payload = json.loads(text) if text else None
                if response.status >= 400:
                    raise _remote_error(response.status, payload, text)
                return payload
        except aiohttp.ClientError as exc:
            raise RemoteError(
                SERVICE, 0, type(exc).__name__, f"cannot reach {url}: {exc}"
            ) from exc
        except TimeoutError as exc:
            raise RemoteError(
                SERVICE, 0, "Timeout", f"no answer from {url} in {self.timeout_s}s"
            ) from exc
        except json.JSONDecodeError as exc:
            raise RemoteError(SERVICE, 0, "BadReply", f"{url} sent non-JSON") from exc

    # -- objects ------------------------------------------------------------

    async def put_tenant(self, tenant: Tenant) -> Tenant:
        body = tenant.model_dump(mode="json")
        return Tenant.model_validate(
            await self.request("POST", f"tenants/{tenant.tenantName}/", body)
        )

    async def delete_tenant(self, name: str) -> None:
        await self.request("DELETE", f"tenants/{name}/")

    async def list_tenants(self) -> list[Tenant]:
        return [Tenant.model_validate(t) for t in await self.request("GET", "tenants/")]

    async def put_network(self, network: Network) -> Network:
        body = network.model_dump(mode="json")
        return Network.model_validate(
            await self.request("POST", f"networks/{network.key}/", body)
        )

    async def get_network(self, tenant: str, name: str) -> Network:
        return Network.model_validate(
            await self.request("GET", f"networks/{tenant}:{name}/")
        )

    async def list_networks(self) -> list[Network]:
        return [
            Network.model_validate(n) for n in await self.request("GET", "networks/")
        ]

    async def delete_network(self, tenant: str, name: str) -> None:
        await self.request("DELETE", f"networks/{tenant}:{name}/")

    async def inspect(self, plural: str, key: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", f"inspect/{plural}/{key}/")
        return result

    async def create_endpoint(
        self, request: EndpointRequest, reason: str = ""
    ) -> Endpoint:
        body = request.model_dump(mode="json")
        path = f"endpoints/{request.endpoint_id}/"
        return Endpoint.model_validate(await self.request("POST", path, body, reason))

    async def delete_endpoint(self, endpoint_id: str, reason: str = "") -> Endpoint:
        path = f"endpoints/{endpoint_id}/"
        return Endpoint.model_validate(await self.request("DELETE", path, None, reason))

    async def get_endpoint(self, endpoint_id: str) -> Endpoint:
        return Endpoint.model_validate(
            await self.request("GET", f"endpoints/{endpoint_id}/")
        )

    async def list_endpoints(self) -> list[Endpoint]:
        return [
            Endpoint.model_validate(e) for e in await self.request("GET", "endpoints/")
        ]

    async def put_host(self, host: Host) -> Host:
        body = host.model_dump(mode="json")
        return Host.model_validate(
            await self.request("POST", f"hosts/{host.hostName}/", body)
        )

    async def list_hosts(self) -> list[Host]:
        return [Host.model_validate(h) for h in await self.request("GET", "hosts/")]

    async def watch(
        self, revision: int, host: str = ""
    ) -> AsyncIterator[dict[str, Any]]:
        """Follow the desired-state stream from ``revision`` (0: snapshot first).

        With ``host``, only that host's span: the networks its endpoints are
        on, their endpoints and the hosts it tunnels to. Runs until the
        connection drops (RemoteError, and the next call starts on the next
        replica); the caller reconnects with the last revision it applied. No
        total timeout: idle streams carry pings, and a read gap of four ping
        intervals counts as a dead peer.
        """
        url = f"{self.base_url}/api/v1/watch/?revision={revision}"
        if host:
            url += f"&host={host}"
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.timeout_s, sock_read=20
        )
        try:
            async with self.session.get(url, timeout=timeout) as response:
                if response.status >= 400:
                    text = await response.text()
                    raise _remote_error(response.status, _maybe_json(text), text)
                async for raw in response.content:
                    if raw.strip():
                        yield json.loads(raw)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._rotate()
            raise RemoteError(
                SERVICE, 0, type(exc).__name__, f"stream {url} ended: {exc}"
            ) from exc


def _maybe_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _remote_error(status: int, payload: Any, text: str) -> RemoteError:
    if isinstance(payload, dict) and "message" in payload:
        return RemoteError(
            SERVICE, status, str(payload.get("error", "Error")), str(payload["message"])
        )
    return RemoteError(SERVICE, status, "Error", text[:200])

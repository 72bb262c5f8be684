"""The netmaster REST client every front end shares (netctl, the agent): aiohttp.

Errors netmaster answers with become RemoteError carrying its status and the
server's error class and message; a netmaster that cannot be reached is a
RemoteError with status 0 whose message names the URL.
"""

from __future__ import annotations

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


class NetmasterClient:
    """A session to one netmaster; use as ``async with NetmasterClient(url) as c``."""

    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout_s)
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

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        url = f"{self.base_url}/api/v1/{path.lstrip('/')}"
        try:
            async with self.session.request(method, url, json=body) as response:
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

    async def create_endpoint(self, request: EndpointRequest) -> Endpoint:
        body = request.model_dump(mode="json")
        return Endpoint.model_validate(
            await self.request("POST", f"endpoints/{request.endpoint_id}/", body)
        )

    async def delete_endpoint(self, endpoint_id: str) -> Endpoint:
        return Endpoint.model_validate(
            await self.request("DELETE", f"endpoints/{endpoint_id}/")
        )

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

    async def watch(self, revision: int) -> AsyncIterator[dict[str, Any]]:
        """Follow the desired-state stream from ``revision`` (0: snapshot first).

        Runs until the connection drops (RemoteError); the caller reconnects
        with the last revision it applied. No total timeout: idle streams carry
        pings, and a read gap of three ping intervals counts as a dead peer.
        """
        url = f"{self.base_url}/api/v1/watch/?revision={revision}"
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

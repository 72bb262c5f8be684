"""netmaster's REST API under ``/api/v1/``: an ASGI app (FastAPI) over State.

Keys in paths are colon-joined as Contiv's are: ``/api/v1/networks/t1:net1/``.
Every error leaves as JSON ``{"error": ClassName, "message": ...}`` (plus
``field``/``value``/``expected`` for validation errors) with a 4xx status; the
body of a POST must name the same object as its path.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse

from api.errors import NetpluginError, ValidationError
from api.models import Endpoint, EndpointRequest, Host, Network, Tenant
from netmaster import ha
from netmaster.leader import Leadership, SoloLeadership
from netmaster.span import SpanHub
from netmaster.state import State
from netmaster.store.base import Store
from netmaster.stream import follow

log = logging.getLogger(__name__)

PREFIX = "/api/v1"


def _split_key(key: str, parts: int, form: str) -> list[str]:
    pieces = key.split(":")
    if len(pieces) != parts or not all(pieces):
        raise ValidationError("key", key, form)
    return pieces


def _same(field: str, in_body: str, in_path: str) -> None:
    if in_body != in_path:
        raise ValidationError(field, in_body, f"{in_path!r} as named in the URL")


def _validation_body(exc: RequestValidationError) -> dict[str, Any]:
    first = exc.errors()[0] if exc.errors() else {}
    location = [str(p) for p in first.get("loc", ()) if p not in ("body",)]
    field = ".".join(location) or "body"
    message = str(first.get("msg", "invalid request"))
    return {
        "error": "ValidationError",
        "field": field,
        "value": repr(first.get("input")),
        "expected": message.removeprefix("Value error, "),
        "message": f"{field}: {message.removeprefix('Value error, ')}",
        "errors": [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg")}
            for e in exc.errors()
        ],
    }


def create_app(store: Store, leadership: Leadership | None = None) -> FastAPI:
    """The REST application; the caller owns ``store`` and closes it.

    ``leadership`` says whether this replica may write (default: a single
    replica that always may); its fence guards every write. The caller closes
    ``app.state.forwarder`` after serving.
    """
    leadership = leadership or SoloLeadership("netmaster", "")
    state = State(store, fence=leadership)

    app = FastAPI(title="netmaster", version="0.1.0")
    app.state.netmaster = state
    app.state.forwarder = ha.install(app, leadership)

    @app.exception_handler(NetpluginError)
    async def _domain_error(request: Request, exc: NetpluginError) -> JSONResponse:
        if exc.http_status >= 500:
            log.error(
                "request failed method=%s path=%s error=%s",
                request.method,
                request.url.path,
                exc,
            )
        return JSONResponse(exc.to_dict(), status_code=exc.http_status)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(
        request: Request, exc: RequestValidationError
    ) -> JSONResponse:
        return JSONResponse(_validation_body(exc), status_code=400)

    # -- tenants ------------------------------------------------------------

    @app.get(f"{PREFIX}/tenants/")
    async def list_tenants() -> list[Tenant]:
        return await state.list_tenants()

    @app.get(f"{PREFIX}/tenants/{{key}}/")
    async def get_tenant(key: str) -> Tenant:
        return await state.get_tenant(key)

    @app.post(f"{PREFIX}/tenants/{{key}}/")
    @app.put(f"{PREFIX}/tenants/{{key}}/")
    async def put_tenant(key: str, tenant: Tenant) -> Tenant:
        _same("tenantName", tenant.tenantName, key)
        return await state.put_tenant(tenant)

    @app.delete(f"{PREFIX}/tenants/{{key}}/")
    async def delete_tenant(key: str) -> dict[str, str]:
        await state.delete_tenant(key)
        return {"deleted": key}

    # -- networks -----------------------------------------------------------

    @app.get(f"{PREFIX}/networks/")
    async def list_networks() -> list[Network]:
        return await state.list_networks()

    @app.get(f"{PREFIX}/networks/{{key}}/")
    async def get_network(key: str) -> Network:
        tenant, name = _split_key(key, 2, "tenant:network")
        return await state.get_network(tenant, name)

    @app.post(f"{PREFIX}/networks/{{key}}/")
    @app.put(f"{PREFIX}/networks/{{key}}/")
    async def put_network(key: str, network: Network) -> Network:
        tenant, name = _split_key(key, 2, "tenant:network")
        _same("tenantName", network.tenantName, tenant)
        _same("networkName", network.networkName, name)
        return await state.put_network(network)

    @app.delete(f"{PREFIX}/networks/{{key}}/")
    async def delete_network(key: str) -> dict[str, str]:
        tenant, name = _split_key(key, 2, "tenant:network")
        await state.delete_network(tenant, name)
        return {"deleted": key}

    @app.get(f"{PREFIX}/inspect/networks/{{key}}/")
    async def inspect_network(key: str) -> dict[str, Any]:
        tenant, name = _split_key(key, 2, "tenant:network")
        config = await state.get_network(tenant, name)
        oper = await state.network_oper(tenant, name)
        return {"Config": config.model_dump(), "Oper": oper.model_dump()}

    # -- endpoints ----------------------------------------------------------

    @app.get(f"{PREFIX}/endpoints/")
    async def list_endpoints() -> list[Endpoint]:
        return await state.endpoints.list()

    @app.get(f"{PREFIX}/endpoints/{{key}}/")
    async def get_endpoint(key: str) -> Endpoint:
        return await state.endpoints.get(key)

    @app.post(f"{PREFIX}/endpoints/{{key}}/")
    @app.put(f"{PREFIX}/endpoints/{{key}}/")
    async def create_endpoint(key: str, request: EndpointRequest) -> Endpoint:
        _same("containerID:ifname", request.endpoint_id, key)
        return await state.endpoints.create(request)

    @app.delete(f"{PREFIX}/endpoints/{{key}}/")
    async def delete_endpoint(key: str) -> Endpoint:
        return await state.endpoints.delete(key)

    @app.get(f"{PREFIX}/inspect/endpoints/{{key}}/")
    async def inspect_endpoint(key: str) -> dict[str, Any]:
        endpoint = await state.endpoints.get(key)
        return {"Config": endpoint.model_dump(), "Oper": {"host": endpoint.host}}

    # -- hosts --------------------------------------------------------------

    @app.get(f"{PREFIX}/hosts/")
    async def list_hosts() -> list[Host]:
        return await state.list_hosts()

    @app.get(f"{PREFIX}/hosts/{{key}}/")
    async def get_host(key: str) -> Host:
        return await state.get_host(key)

    @app.post(f"{PREFIX}/hosts/{{key}}/")
    @app.put(f"{PREFIX}/hosts/{{key}}/")
    async def put_host(key: str, host: Host) -> Host:
        _same("hostName", host.hostName, key)
        return await state.put_host(host)

    @app.delete(f"{PREFIX}/hosts/{{key}}/")
    async def delete_host(key: str) -> dict[str, str]:
        await state.delete_host(key)
        return {"deleted": key}

    # -- the agents' stream -------------------------------------------------

    hub = app.state.span_hub = SpanHub(store)

    @app.get(f"{PREFIX}/watch/")
    async def watch(
        revision: int = Query(0, ge=0),
        host: str = Query("", pattern=r"^[A-Za-z0-9_.-]{0,64}$"),
    ) -> StreamingResponse:
        """The desired-state stream; with ``host``, only that host's span."""
        lines = hub.follow(host) if host else follow(store, revision)
        return StreamingResponse(lines, media_type="application/x-ndjson")

    return app


async def shutdown(app: FastAPI) -> None:
    """Stop what create_app started (the span hub, the write forwarder)."""
    await app.state.span_hub.close()
    await app.state.forwarder.close()

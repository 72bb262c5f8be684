"""netmaster's REST API under ``/api/v1/``: an ASGI app (FastAPI) over State.

Every kind of ``netmaster.registry`` gets Contiv's scheme::

    GET    /api/v1/<plural>/                 list
    GET    /api/v1/<plural>/<key>/           read one
    POST   /api/v1/<plural>/<key>/           create or update (PUT alike)
    DELETE /api/v1/<plural>/<key>/           delete
    GET    /api/v1/inspect/<plural>/<key>/   {"Config": ..., "Oper": ...}

also under the collection spellings Contiv clients use (``policys``). Keys
are colon-joined (``t1:net1``, ``t1:pol:rule1``) and the body of a POST must
name the object its path names. Endpoints are read-only here except for the
agents' create and delete; ``/api/v1/watch/`` is the agents' stream.

Every error leaves as JSON ``{"error": ClassName, "message": ...}`` (plus
``field``/``value``/``expected`` for validation errors, worded by
``netmaster.rest_errors``) with a 4xx status, or 503 when the store cannot be
reached; the OpenAPI document at ``/openapi.json`` describes them. Request
bodies over 1 MiB are refused with 413 (``netmaster.body_limit``).
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import Body, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, create_model
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.errors import NetpluginError, ValidationError
from api.models import (
    CONTAINER_ID_PATTERN,
    IFNAME_PATTERN,
    Endpoint,
    EndpointRequest,
    NetworkOper,
)
from api.objects import (
    Deleted,
    EndpointGroupOper,
    EndpointOper,
    ErrorBody,
    Global,
    GlobalOper,
    NetprofileOper,
    PolicyOper,
    RuleOper,
    ServiceLBOper,
    TenantOper,
)
from netmaster import ha, routes_ipam
from netmaster.body_limit import MAX_BODY_BYTES, BodyLimit
from netmaster.leader import Leadership, SoloLeadership
from netmaster.leases import LeaseConfig
from netmaster.registry import (
    ENDPOINT_GROUP,
    GLOBAL,
    HOST,
    NETPROFILE,
    NETWORK,
    POLICY,
    RULE,
    SERVICE_LB,
    TENANT,
    Kind,
)
from netmaster.rest_errors import (
    HOST_FILTER_PATTERN,
    RouteHints,
    clip_body,
    validation_body,
)
from netmaster.span import SpanHub
from netmaster.state import State
from netmaster.store.base import Store
from netmaster.stream import follow

log = logging.getLogger(__name__)

PREFIX = "/api/v1"

M = TypeVar("M", bound=BaseModel)

_ENDPOINT_ID_RE = re.compile(f"^{CONTAINER_ID_PATTERN[1:-1]}:{IFNAME_PATTERN[1:-1]}$")

#: An object of each kind, as the OpenAPI document shows it (and the fuzz
#: test creates it, so generated requests also reach existing objects).
EXAMPLES: dict[str, dict[str, Any]] = {
    "tenant": {"tenantName": "blue"},
    "network": {
        "tenantName": "blue",
        "networkName": "web",
        "encap": "vxlan",
        "subnet": "10.1.1.0/24",
        "gateway": "10.1.1.254",
    },
    "netprofile": {
        "tenantName": "blue",
        "profileName": "gold",
        "bandwidth": "100mbps",
        "burst": 128,
        "DSCP": 10,
    },
    "policy": {"tenantName": "blue", "policyName": "web-in"},
    "endpointGroup": {
        "tenantName": "blue",
        "groupName": "web-tier",
        "networkName": "web",
        "policies": ["web-in"],
        "netProfile": "gold",
        "ipPool": "10.1.1.10-10.1.1.50",
    },
    "rule": {
        "tenantName": "blue",
        "policyName": "web-in",
        "ruleId": "1",
        "direction": "in",
        "priority": 10,
        "fromEndpointGroup": "web-tier",
        "protocol": "tcp",
        "port": 80,
        "action": "allow",
    },
    "serviceLB": {
        "tenantName": "blue",
        "serviceName": "web-svc",
        "networkName": "web",
        "selectors": ["app=web"],
        "ports": ["80:8080:TCP"],
        "ipAddress": "10.1.1.200",
    },
    "global": {
        "name": "global",
        "vlans": "1-4094",
        "vxlans": "1-10000",
        "fwdMode": "bridge",
        "arpMode": "proxy",
    },
    "host": {"hostName": "node1", "vtepIP": "10.0.0.11"},
}


EndpointKey = Annotated[
    str, Path(description="The key, containerID:ifname", examples=["4f2a9c01:eth0"])
]


Responses = dict[int | str, dict[str, Any]]


def _error(what: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": what}


BAD_REQUEST: Responses = {400: _error("Malformed key or body; names field and value")}
NOT_FOUND: Responses = {404: _error("The object, or one it refers to, does not exist")}
CONFLICT: Responses = {409: _error("Clashes with the current state, or still in use")}
UNAVAILABLE: Responses = {503: _error("The state store cannot be reached; retry")}
TOO_LARGE: Responses = {
    413: _error(f"The body is over {MAX_BODY_BYTES >> 20} MiB"),
}


def _json(model: BaseModel) -> Response:
    """A model already validated, serialised once (the allocation hot path).

    Returning the model would have FastAPI validate it against the response
    model again before serialising: a fifth of a create's server time.
    """
    return Response(model.model_dump_json(), media_type="application/json")


def _check_endpoint_id(key: str) -> str:
    if not _ENDPOINT_ID_RE.match(key):
        raise ValidationError("key", key, "containerID:ifname such as 4f2a9c:eth0")
    return key


def _with_signature(
    func: Callable[..., Any], *params: inspect.Parameter
) -> Callable[..., Any]:
    # FastAPI reads parameters from the signature; the generic handlers below
    # get their kind's path and body types this way.
    func.__signature__ = inspect.Signature(list(params))  # type: ignore[attr-defined]
    return func


def _key_param(kind: Kind[Any], example: str) -> inspect.Parameter:
    annotation = Annotated[
        str, Path(description=f"The key, {kind.key_form}", examples=[example])
    ]
    return inspect.Parameter(
        "key", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=annotation
    )


def _add_kind(
    app: FastAPI,
    kind: Kind[M],
    *,
    list_fn: Callable[[], Awaitable[list[M]]],
    get_fn: Callable[[str], Awaitable[M]],
    put_fn: Callable[[M], Awaitable[M]],
    delete_fn: Callable[[str], Awaitable[Any]],
    oper_model: type[BaseModel],
    oper_fn: Callable[[M], Awaitable[BaseModel]],
) -> None:
    """Register the five routes of ``kind`` under its plural and aliases."""
    example = EXAMPLES[kind.name]
    example_key = ":".join(str(example[f]) for f in kind.key_fields)
    key = _key_param(kind, example_key)
    body = inspect.Parameter(
        "body",
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        annotation=Annotated[kind.model, Body(examples=[example])],
    )
    inspect_model = create_model(
        f"{kind.model.__name__}Inspect",
        Config=(kind.model, ...),
        Oper=(oper_model, ...),
    )
    # list[kind.model], spelled so that mypy accepts a runtime type.
    list_model: Any = list.__class_getitem__(kind.model)

    async def list_objects() -> list[M]:
        return await list_fn()

    async def get_object(key: str) -> M:
        return await get_fn(key)

    async def put_object(key: str, body: M) -> M:
        kind.check_body(body, key)
        return await put_fn(body)

    async def delete_object(key: str) -> Deleted:
        await delete_fn(key)
        return Deleted(deleted=key)

    async def inspect_object(key: str) -> dict[str, Any]:
        config = await get_fn(key)
        return {"Config": config, "Oper": await oper_fn(config)}

    _with_signature(get_object, key)
    _with_signature(put_object, key, body)
    _with_signature(delete_object, key)
    _with_signature(inspect_object, key)

    create_errors = {**BAD_REQUEST, **NOT_FOUND, **CONFLICT, **TOO_LARGE}
    routes: list[tuple[str, Callable[..., Any], str, str, Any, Any, str]] = [
        ("", list_objects, "GET", f"list_{kind.plural}", list_model, {}, "List all"),
        (
            "{key}/",
            get_object,
            "GET",
            f"get_{kind.name}",
            kind.model,
            {**BAD_REQUEST, **NOT_FOUND},
            f"Read one {kind.name}",
        ),
        (
            "{key}/",
            put_object,
            "POST",
            f"post_{kind.name}",
            kind.model,
            create_errors,
            f"Create or update a {kind.name}",
        ),
        (
            "{key}/",
            put_object,
            "PUT",
            f"put_{kind.name}",
            kind.model,
            create_errors,
            f"Create or update a {kind.name}",
        ),
        (
            "{key}/",
            delete_object,
            "DELETE",
            f"delete_{kind.name}",
            Deleted,
            create_errors,
            f"Delete a {kind.name} nothing refers to",
        ),
    ]
    for plural in (kind.plural, *kind.aliases):
        documented = plural == kind.plural
        suffix = "" if documented else f"_{plural}"
        paths = [(f"{PREFIX}/{plural}/{rest}", *spec) for rest, *spec in routes]
        paths.append(
            (
                f"{PREFIX}/inspect/{plural}/{{key}}/",
                inspect_object,
                "GET",
                f"inspect_{kind.name}",
                inspect_model,
                {**BAD_REQUEST, **NOT_FOUND},
                f"A {kind.name}'s configuration and runtime state",
            )
        )
        for path, func, method, op, model, errors, summary in paths:
            app.add_api_route(
                path,
                func,
                methods=[method],
                response_model=model,
                responses={**errors, **UNAVAILABLE},
                operation_id=f"{op}{suffix}",
                summary=summary,
                include_in_schema=documented,
                tags=[kind.name],
            )


def _add_registry_kind(
    app: FastAPI,
    state: State,
    kind: Kind[M],
    oper_model: type[BaseModel],
    oper_fn: Callable[[M], Awaitable[BaseModel]],
) -> None:
    async def list_fn() -> list[M]:
        return await state.list_objects(kind)

    async def get_fn(key: str) -> M:
        return await state.get_object(kind, key)

    async def put_fn(obj: M) -> M:
        return await state.put_object(kind, obj)

    async def delete_fn(key: str) -> M:
        return await state.delete_object(kind, key)

    _add_kind(
        app,
        kind,
        list_fn=list_fn,
        get_fn=get_fn,
        put_fn=put_fn,
        delete_fn=delete_fn,
        oper_model=oper_model,
        oper_fn=oper_fn,
    )


def _add_global(app: FastAPI, state: State) -> None:
    async def list_fn() -> list[Global]:
        return [await state.get_global()]

    async def get_fn(key: str) -> Global:
        GLOBAL.split(key)
        if key != "global":
            raise ValidationError("key", key, "'global': there is one global object")
        return await state.get_global()

    async def delete_fn(key: str) -> Global:
        await get_fn(key)
        return await state.reset_global()

    async def oper_fn(_: Global) -> GlobalOper:
        return await state.global_oper()

    _add_kind(
        app,
        GLOBAL,
        list_fn=list_fn,
        get_fn=get_fn,
        put_fn=state.put_global,
        delete_fn=delete_fn,
        oper_model=GlobalOper,
        oper_fn=oper_fn,
    )


class _NoOper(BaseModel):
    """Hosts have no runtime state of their own yet."""


def _add_endpoints(app: FastAPI, state: State) -> None:
    """Endpoints are the agents' to create and delete; operators read them."""
    errors = {**BAD_REQUEST, **NOT_FOUND, **UNAVAILABLE}
    inspect_model = create_model(
        "EndpointInspect", Config=(Endpoint, ...), Oper=(EndpointOper, ...)
    )

    @app.get(f"{PREFIX}/endpoints/", responses=UNAVAILABLE, tags=["endpoint"])
    async def list_endpoints() -> list[Endpoint]:
        return await state.endpoints.list()

    @app.get(f"{PREFIX}/endpoints/{{key}}/", responses=errors, tags=["endpoint"])
    async def get_endpoint(key: EndpointKey) -> Endpoint:
        return await state.endpoints.get(_check_endpoint_id(key))

    @app.post(
        f"{PREFIX}/endpoints/{{key}}/",
        responses={**errors, **CONFLICT, **TOO_LARGE},
        tags=["endpoint"],
        response_model=Endpoint,
        summary="An agent attaches a container: allocate its address",
    )
    @app.put(
        f"{PREFIX}/endpoints/{{key}}/",
        responses={**errors, **CONFLICT, **TOO_LARGE},
        tags=["endpoint"],
        operation_id="put_endpoint",
        response_model=Endpoint,
        summary="An agent attaches a container: allocate its address",
    )
    async def create_endpoint(key: EndpointKey, request: EndpointRequest) -> Response:
        _check_endpoint_id(key)
        if request.endpoint_id != key:
            raise ValidationError(
                "containerID:ifname", request.endpoint_id, f"{key!r} as in the URL"
            )
        return _json(await state.endpoints.create(request))

    @app.delete(
        f"{PREFIX}/endpoints/{{key}}/",
        responses=errors,
        tags=["endpoint"],
        response_model=Endpoint,
        summary="An agent detaches a container: release its address",
    )
    async def delete_endpoint(key: EndpointKey) -> Response:
        return _json(await state.endpoints.delete(_check_endpoint_id(key)))

    @app.get(
        f"{PREFIX}/inspect/endpoints/{{key}}/",
        responses=errors,
        response_model=inspect_model,
        tags=["endpoint"],
    )
    async def inspect_endpoint(key: EndpointKey) -> dict[str, Any]:
        endpoint = await state.endpoints.get(_check_endpoint_id(key))
        return {"Config": endpoint, "Oper": await state.endpoint_oper(key)}


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The schema without FastAPI's 422 responses: validation failures are 400s."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    operation.get("responses", {}).pop("422", None)
            components = schema.get("components", {}).get("schemas", {})
            components.pop("HTTPValidationError", None)
            components.pop("ValidationError", None)
            app.openapi_schema = schema
        return app.openapi_schema

    return build


def create_app(
    store: Store,
    leadership: Leadership | None = None,
    lease_config: LeaseConfig | None = None,
) -> FastAPI:
    """The REST application; the caller owns ``store`` and closes it.

    ``leadership`` says whether this replica may write (default: a single
    replica that always may); its fence guards every write, and only the
    leader reclaims expired hosts' addresses (``lease_config`` sets the
    timings). The caller may ``await app.state.ipam.start()`` to run the
    reaper at once (else it starts on the first lease renewal) and ends with
    ``shutdown(app)``.
    """
    leadership = leadership or SoloLeadership("netmaster", "")
    state = State(store, fence=leadership)

    app = FastAPI(
        title="netmaster",
        version="0.1.0",
        description="Contiv-style object model of netplugin: tenants, networks, "
        "endpoint groups, policies and rules, network profiles, service load "
        "balancers, global settings, hosts and endpoints.",
    )
    app.state.netmaster = state
    app.state.forwarder = ha.install(app, leadership)
    # Outside the forwarder, so that forwarded bodies are bounded too.
    app.add_middleware(BodyLimit)

    @app.exception_handler(NetpluginError)
    async def _domain_error(request: Request, exc: NetpluginError) -> JSONResponse:
        if exc.http_status >= 500:
            log.error(
                "request failed method=%s path=%s error=%s",
                request.method,
                request.url.path,
                exc,
            )
        return JSONResponse(clip_body(exc.to_dict()), status_code=exc.http_status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(
        request: Request, exc: StarletteHTTPException
    ) -> JSONResponse:
        # Starlette's own refusals (no such route, a body that is not JSON at
        # all) in netmaster's error shape too.
        if exc.status_code == 400:
            body = ValidationError("body", "", "a JSON document in UTF-8").to_dict()
            body["message"] = f"body: {exc.detail}"
        else:
            hints: RouteHints = request.app.state.route_hints
            allow = (exc.headers or {}).get("Allow", "")
            body = hints.body(
                exc.status_code,
                str(exc.detail),
                request.method,
                request.url.path,
                allow,
            )
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(
        request: Request, exc: RequestValidationError
    ) -> JSONResponse:
        return JSONResponse(validation_body(exc), status_code=400)

    async def tenant_oper(obj: Any) -> TenantOper:
        return await state.tenant_oper(obj)

    async def network_oper(obj: Any) -> NetworkOper:
        return await state.network_oper(obj.tenantName, obj.networkName)

    async def no_oper(obj: Any) -> _NoOper:
        return _NoOper()

    _add_registry_kind(app, state, TENANT, TenantOper, tenant_oper)
    _add_registry_kind(app, state, NETWORK, NetworkOper, network_oper)
    _add_global(app, state)
    _add_registry_kind(app, state, ENDPOINT_GROUP, EndpointGroupOper, state.group_oper)
    _add_registry_kind(app, state, POLICY, PolicyOper, state.policy_oper)
    _add_registry_kind(app, state, RULE, RuleOper, state.rule_oper)
    _add_registry_kind(app, state, NETPROFILE, NetprofileOper, state.netprofile_oper)
    _add_registry_kind(app, state, SERVICE_LB, ServiceLBOper, state.service_oper)
    _add_registry_kind(app, state, HOST, _NoOper, no_oper)
    _add_endpoints(app, state)
    routes_ipam.install(
        app, state, lease_config=lease_config, is_leader=lambda: leadership.is_leader
    )

    hub = app.state.span_hub = SpanHub(store)

    @app.get(
        f"{PREFIX}/watch/",
        responses={
            **BAD_REQUEST,
            **UNAVAILABLE,
            200: {
                "description": "NDJSON: a snapshot, then changes and pings",
                "content": {"application/x-ndjson": {}},
            },
        },
        response_class=StreamingResponse,
        tags=["stream"],
    )
    async def watch(
        revision: int = Query(0, ge=0),
        host: str = Query("", pattern=HOST_FILTER_PATTERN),
    ) -> StreamingResponse:
        """The desired-state stream; with ``host``, only that host's span."""
        lines = hub.follow(host) if host else follow(store, revision)
        return StreamingResponse(lines, media_type="application/x-ndjson")

    app.state.route_hints = RouteHints(getattr(r, "path", "") for r in app.routes)
    app.openapi = _openapi(app)  # type: ignore[method-assign]
    return app


async def shutdown(app: FastAPI) -> None:
    """Stop what create_app started: span hub, write forwarder, IPAM workers."""
    await app.state.span_hub.close()
    await app.state.forwarder.close()
    await app.state.ipam.close()

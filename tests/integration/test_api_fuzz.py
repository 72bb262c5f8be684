"""Schema-driven fuzzing of netmaster's REST API: no input may yield a 5xx.

Schemathesis takes netmaster's OpenAPI document and sends every operation the
schema's examples plus generated valid and invalid requests, to a real
netmaster (uvicorn on 127.0.0.1, embedded store in a temporary directory, on a
thread of its own) whose ``/openapi.json`` is checked to be that document. Besides "no server error" it holds the answers to the
schema: documented status codes, content types and bodies, and invalid input
refused. The store starts holding the schema's example objects, so generated
requests also meet existing tenants, networks, groups and rules.

Needs no root and no external service; runs in well under a minute.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import hypothesis
import pytest
import schemathesis
import uvicorn
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from api.models import EndpointRequest
from netmaster.registry import KINDS
from netmaster.server import EXAMPLES, create_app, shutdown
from netmaster.state import State
from netmaster.store import EmbeddedStore
from netmaster.store.base import Store
from tests.conftest import free_port

#: Generated requests per operation; about 55 operations.
MAX_EXAMPLES = 60
#: Objects in the order their references need them.
SEED_ORDER = (
    "tenant",
    "network",
    "netprofile",
    "policy",
    "endpointGroup",
    "rule",
    "serviceLB",
    "host",
)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
#: Routes held to "no server error" only.
# TODO(ipam): drop these once netmaster.routes_ipam documents its 400/404/503
# answers (netmaster.server's BAD_REQUEST, NOT_FOUND, UNAVAILABLE); until
# then their refusals count as undocumented status codes.
RELAXED_PATHS = ("/api/v1/ledger/", "/api/v1/leases/", "/api/v1/ipam/", "/lease/")


class ThreadedNetmaster:
    """netmaster on uvicorn in a thread with its own event loop and store."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._started = threading.Event()
        self._server: uvicorn.Server | None = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fuzz-netmaster")

    def __enter__(self) -> ThreadedNetmaster:
        self._thread.start()
        if not self._started.wait(timeout=30) or self._failure is not None:
            raise RuntimeError(f"netmaster did not start: {self._failure!r}")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(timeout=30)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to the test thread by __enter__
            self._failure = exc
            self._started.set()

    async def _serve(self) -> None:
        store = await EmbeddedStore.open(self.directory / "state.db")
        try:
            await seed(State(store))
            app = create_app(store)
            config = uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                log_config=None,
                lifespan="off",
            )
            self._server = uvicorn.Server(config)
            task = asyncio.create_task(self._server.serve())
            while not self._server.started and not task.done():
                await asyncio.sleep(0.01)
            self._started.set()
            await task
            await shutdown(app)
        finally:
            await store.close()


async def seed(state: State) -> None:
    for name in SEED_ORDER:
        kind = KINDS[name]
        await state.put_object(kind, kind.model.model_validate(EXAMPLES[name]))
    await state.endpoints.create(
        EndpointRequest(
            tenantName="blue",
            networkName="web",
            containerID="4f2a9c01",
            host="node1",
        )
    )


@pytest.fixture(scope="module")
def netmaster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with ThreadedNetmaster(tmp_path_factory.mktemp("fuzz")) as server:
        yield server.url


def _document() -> dict[str, Any]:
    # Built at collection time, when no server runs yet: the document depends
    # on the routes only, and the app touches its store only when serving.
    # (schemathesis' fixture-based loader needs pytest internals that pytest 9
    # no longer has; test_served_document_is_the_fuzzed_one closes the gap.)
    return create_app(cast(Store, None)).openapi()


DOCUMENT = _document()
# The stream never ends by design; tests/unit/test_stream.py covers it.
schema = schemathesis.openapi.from_dict(DOCUMENT).exclude(path="/api/v1/watch/")


def test_served_document_is_the_fuzzed_one(netmaster: str) -> None:
    with urllib.request.urlopen(f"{netmaster}/openapi.json", timeout=10) as reply:
        assert json.load(reply) == DOCUMENT


@schema.parametrize()
@hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
)
def test_no_input_yields_a_server_error(netmaster: str, case: Any) -> None:
    path = case.operation.path
    relaxed = any(part in path for part in RELAXED_PATHS)
    checks = [not_a_server_error] if relaxed else CHECKS
    case.call_and_validate(base_url=netmaster, checks=checks)

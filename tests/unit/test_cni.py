"""The CNI shim and the cniserver: wire format, validation, errors, socket mode.

The shim runs as a real subprocess, as a runtime executes it, against a real
cniserver on a unix socket whose backend records what it was asked.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from api.errors import NotFoundError, RemoteError
from cniserver import types as cni
from cniserver.server import CNIServer


class RecordingBackend:
    def __init__(self) -> None:
        self.calls: list[tuple[str, cni.CNIRequest]] = []

    async def cni_add(self, request: cni.CNIRequest) -> dict[str, Any]:
        self.calls.append(("ADD", request))
        if request.network == "missing":
            raise RemoteError(
                "netmaster", 404, "NotFoundError", "network 'missing' not found"
            )
        return cni.add_result(
            version=request.cni_version, host_if="nplx", container_if=request.ifname,
            mac="02:02:0a:00:00:02", netns=request.netns, ip="10.0.0.2",
            prefix_len=24, gateway="10.0.0.1",
        )  # fmt: skip

    async def cni_del(self, request: cni.CNIRequest) -> None:
        self.calls.append(("DEL", request))
        if request.container_id == "crash":
            raise RuntimeError("boom")

    async def cni_check(self, request: cni.CNIRequest) -> None:
        self.calls.append(("CHECK", request))
        raise NotFoundError("endpoint", f"{request.container_id}:{request.ifname}")


@pytest.fixture
async def server(tmp_path: Path):
    backend = RecordingBackend()
    socket_path = tmp_path / "cni.sock"
    srv = CNIServer(str(socket_path), backend)
    await srv.start()
    try:
        yield srv, backend
    finally:
        await srv.stop()


async def shim(
    env: dict[str, str], config: dict[str, Any] | str | None
) -> tuple[int, dict[str, Any] | None]:
    stdin = config if isinstance(config, str) else json.dumps(config or {})
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cniserver.shim",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": os.getcwd(), **env},
    )  # fmt: skip
    out, _ = await process.communicate(stdin.encode())
    return process.returncode or 0, json.loads(out) if out.strip() else None


def runtime_env(command: str, **extra: str) -> dict[str, str]:
    return {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": "abc123",
        "CNI_NETNS": "/var/run/netns/abc",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/opt/cni/bin",
        **extra,
    }


def netconf(socket_path: str, **extra: Any) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "n",
        "type": "netplugin-cni",
        "network": "net1",
        "tenant": "t1",
        "cniSocket": socket_path,
        **extra,
    }


async def test_socket_is_owner_only(server):
    srv, _ = server
    mode = stat.S_IMODE(os.stat(srv.socket_path).st_mode)
    assert mode == 0o600


async def test_version_needs_no_agent():
    code, out = await shim({"CNI_COMMAND": "VERSION"}, None)
    assert code == 0
    assert out == {"cniVersion": "1.0.0", "supportedVersions": cni.SUPPORTED_VERSIONS}


async def test_add_forwards_the_runtime_request_and_prints_the_result(server):
    srv, backend = server
    env = runtime_env("ADD", CNI_ARGS="IgnoreUnknown=1;NETWORK=net2;K8S_POD_NAME=p")
    code, out = await shim(env, netconf(srv.socket_path))
    assert code == 0
    assert out["cniVersion"] == "1.0.0"
    assert out["ips"] == [
        {"address": "10.0.0.2/24", "interface": 1, "gateway": "10.0.0.1"}
    ]
    assert out["interfaces"][1] == {
        "name": "eth0", "mac": "02:02:0a:00:00:02", "sandbox": "/var/run/netns/abc",
    }  # fmt: skip
    ((command, request),) = backend.calls
    assert (command, request.network, request.tenant) == ("ADD", "net2", "t1")
    assert request.args["K8S_POD_NAME"] == "p"


async def test_old_versions_get_the_ip_version_field(server):
    srv, _ = server
    code, out = await shim(
        runtime_env("ADD"), netconf(srv.socket_path, cniVersion="0.3.1")
    )
    assert (
        code == 0 and out["cniVersion"] == "0.3.1" and out["ips"][0]["version"] == "4"
    )


async def test_del_prints_nothing_and_allows_a_missing_netns(server):
    srv, backend = server
    code, out = await shim(runtime_env("DEL", CNI_NETNS=""), netconf(srv.socket_path))
    assert (code, out) == (0, None)
    assert backend.calls[0][0] == "DEL"


@pytest.mark.parametrize(
    ("env", "config", "code", "names"),
    [
        (runtime_env("ADD", CNI_CONTAINERID=""), {}, 4, "CNI_CONTAINERID"),
        (runtime_env("ADD", CNI_CONTAINERID="a b"), {}, 4, "CNI_CONTAINERID"),
        (runtime_env("ADD", CNI_NETNS="relative"), {}, 4, "CNI_NETNS"),
        (runtime_env("ADD", CNI_IFNAME="a-very-long-ifname"), {}, 4, "CNI_IFNAME"),
        (runtime_env("ADD", CNI_ARGS="novalue"), {}, 4, "CNI_ARGS"),
        (runtime_env("ADD"), {"network": ""}, 7, "network"),
        (runtime_env("ADD"), {"tenant": "bad tenant"}, 7, "tenant"),
        (runtime_env("ADD"), {"cniVersion": "9.9.9"}, 1, "cniVersion"),
        (runtime_env("BOGUS"), {}, 4, "CNI_COMMAND"),
    ],
)
async def test_bad_requests_are_cni_errors_naming_the_field(
    server, env, config, code, names
):
    srv, backend = server
    status, out = await shim(env, netconf(srv.socket_path, **config))
    assert status == 1
    assert out["code"] == code and names in out["msg"] + out["details"]
    assert backend.calls == []


async def test_malformed_config_is_a_decode_error():
    status, out = await shim(runtime_env("ADD"), "{oops")
    assert status == 1 and out["code"] == 6


async def test_unreachable_agent_says_try_again(tmp_path):
    status, out = await shim(runtime_env("ADD"), netconf(str(tmp_path / "none.sock")))
    assert status == 1 and out["code"] == 11 and "none.sock" in out["details"]


async def test_backend_errors_become_cni_errors(server):
    srv, _ = server
    status, out = await shim(
        runtime_env("ADD"), netconf(srv.socket_path, network="missing")
    )
    assert status == 1 and out["code"] == 7 and "missing" in out["details"]
    status, out = await shim(runtime_env("CHECK"), netconf(srv.socket_path))
    assert status == 1 and out["code"] == 3


async def test_a_crashing_backend_still_answers_a_cni_error(server, caplog):
    srv, _ = server
    env = runtime_env("DEL", CNI_CONTAINERID="crash")
    status, out = await shim(env, netconf(srv.socket_path))
    assert status == 1
    assert out["code"] == 100 and "RuntimeError: boom" in out["details"]
    assert "cni request crashed" in caplog.text


async def test_empty_stdin_says_the_config_is_missing(server):
    status, out = await shim(runtime_env("ADD"), "")
    assert status == 1 and out["code"] == 6 and "empty" in out["details"]

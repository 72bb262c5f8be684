"""``netplugin-cni``: the CNI plugin binary a runtime executes.

It reads the CNI environment and the network configuration on stdin, answers
VERSION itself, and forwards ADD, DEL and CHECK to the agent's cniserver on a
unix socket, printing the agent's result or a CNI error object (exit 1).

The stdlib HTTP client is used here, not aiohttp: the shim is executed once per
container operation and aiohttp's import alone would double its run time.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import sys
from typing import Any, TextIO

from cniserver import types as cni

#: The agent may need netmaster and netlink for an ADD; give it time.
REQUEST_TIMEOUT_S = 60.0


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout_s: float) -> None:
        super().__init__("localhost", timeout=timeout_s)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def build_request(env: dict[str, str], config: dict[str, Any]) -> cni.CNIRequest:
    args = cni.parse_cni_args(env.get("CNI_ARGS", ""))
    request = cni.CNIRequest(
        command=env.get("CNI_COMMAND", ""),
        container_id=env.get("CNI_CONTAINERID", ""),
        netns=env.get("CNI_NETNS", ""),
        ifname=env.get("CNI_IFNAME", ""),
        tenant=args.get("TENANT") or str(config.get("tenant", "default")),
        network=args.get("NETWORK") or str(config.get("network", "")),
        cni_version=str(config.get("cniVersion", cni.CNI_VERSION)),
        args=args,
    )
    request.validate()
    return request


def _read_config(stdin: TextIO) -> dict[str, Any]:
    raw = stdin.read()
    if not raw.strip():
        raise cni.CNIRequestError(
            cni.DECODE_FAILURE,
            "stdin",
            "",
            "the network configuration JSON (it was empty)",
        )
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise cni.CNIRequestError(
            cni.DECODE_FAILURE, "stdin", raw[:80], f"network config JSON ({exc})"
        ) from exc
    if not isinstance(config, dict):
        raise cni.CNIRequestError(
            cni.DECODE_FAILURE, "stdin", raw[:80], "a JSON object"
        )
    version = str(config.get("cniVersion", cni.CNI_VERSION))
    if version not in cni.SUPPORTED_VERSIONS:
        raise cni.CNIRequestError(
            cni.INCOMPATIBLE_VERSION,
            "cniVersion",
            version,
            f"one of {', '.join(cni.SUPPORTED_VERSIONS)}",
        )
    return config


def call_agent(socket_path: str, request: cni.CNIRequest) -> tuple[int, Any]:
    body = json.dumps(request.to_json())
    connection = _UnixConnection(socket_path, REQUEST_TIMEOUT_S)
    try:
        connection.request(
            "POST",
            f"/cni/v1/{request.command.lower()}",
            body=body,
            headers={"Content-Type": "application/json"},
        )
        response = connection.getresponse()
        raw = response.read()
        try:
            return response.status, json.loads(raw or b"null")
        except json.JSONDecodeError:
            return response.status, raw.decode(errors="replace")[:200]
    finally:
        connection.close()


def run(env: dict[str, str], stdin: TextIO, stdout: TextIO) -> int:
    command = env.get("CNI_COMMAND", "")
    version = cni.CNI_VERSION
    try:
        if command == "VERSION":
            json.dump(
                {"cniVersion": version, "supportedVersions": cni.SUPPORTED_VERSIONS},
                stdout,
            )
            return 0
        config = _read_config(stdin)
        version = str(config.get("cniVersion", version))
        request = build_request(env, config)
        socket_path = str(config.get("cniSocket", cni.DEFAULT_SOCKET))
        try:
            status, payload = call_agent(socket_path, request)
        except (OSError, http.client.HTTPException) as exc:
            json.dump(
                cni.error_object(
                    cni.TRY_AGAIN_LATER,
                    "netplugin agent unreachable",
                    f"{socket_path}: {exc}; is the netplugin agent running?",
                    version,
                ),
                stdout,
            )
            return 1
        if status >= 400 or not isinstance(payload, dict):
            json.dump(
                payload
                if isinstance(payload, dict)
                else cni.error_object(
                    cni.PLUGIN_FAILURE, "bad agent reply", str(payload), version
                ),
                stdout,
            )
            return 1
        if request.command == "ADD":
            json.dump(payload, stdout)
        return 0
    except cni.CNIRequestError as exc:
        json.dump(cni.error_object(exc.code, exc.field, str(exc), version), stdout)
        return 1


def main() -> int:
    return run(dict(os.environ), sys.stdin, sys.stdout)


if __name__ == "__main__":
    sys.exit(main())

"""CNI wire types: the request the shim forwards, results and error objects.

Implements the CNI 1.0.0 result (interfaces, ips, routes) and error (code, msg,
details) formats. Network configuration keys read from stdin: ``cniVersion``,
``name``, ``type``, ``tenant`` (default ``default``), ``network`` and
``cniSocket``. ``CNI_ARGS`` may carry ``TENANT=`` and ``NETWORK=``, which win.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from api.errors import (
    AlreadyExistsError,
    ConflictError,
    ExhaustedError,
    NetpluginError,
    NotFoundError,
    RemoteError,
    ValidationError,
)

CNI_VERSION = "1.0.0"
SUPPORTED_VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]
DEFAULT_SOCKET = "/run/netplugin/cni.sock"

# Error codes of the CNI specification, section "Error".
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_NETWORK_CONFIG = 7
TRY_AGAIN_LATER = 11
#: Plugin-specific codes start at 100.
PLUGIN_FAILURE = 100

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_CONTAINER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class CNIRequestError(ValidationError):
    """A CNI request the shim or server refuses, with its CNI error code."""

    def __init__(self, code: int, field: str, value: object, expected: str) -> None:
        self.code = code
        super().__init__(field, value, expected)


@dataclass(frozen=True, slots=True)
class CNIRequest:
    command: str
    container_id: str
    netns: str
    ifname: str
    tenant: str
    network: str
    cni_version: str
    args: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "containerID": self.container_id,
            "netns": self.netns,
            "ifname": self.ifname,
            "tenant": self.tenant,
            "network": self.network,
            "cniVersion": self.cni_version,
            "args": self.args,
        }

    @classmethod
    def from_json(cls, body: Any) -> CNIRequest:
        if not isinstance(body, dict):
            raise CNIRequestError(DECODE_FAILURE, "body", body, "a JSON object")
        try:
            request = cls(
                command=str(body["command"]),
                container_id=str(body["containerID"]),
                netns=str(body.get("netns", "")),
                ifname=str(body.get("ifname", "eth0")),
                tenant=str(body.get("tenant", "default")),
                network=str(body.get("network", "")),
                cni_version=str(body.get("cniVersion", CNI_VERSION)),
                args={str(k): str(v) for k, v in dict(body.get("args", {})).items()},
            )
        except KeyError as exc:
            raise CNIRequestError(
                DECODE_FAILURE, str(exc.args[0]), None, "present in the request"
            ) from exc
        request.validate()
        return request

    def validate(self) -> None:
        if self.command not in ("ADD", "DEL", "CHECK"):
            raise CNIRequestError(
                INVALID_ENVIRONMENT, "CNI_COMMAND", self.command, "ADD, DEL or CHECK"
            )
        if not _CONTAINER_ID.match(self.container_id):
            raise CNIRequestError(
                INVALID_ENVIRONMENT,
                "CNI_CONTAINERID",
                self.container_id,
                "1-128 letters, digits, '_', '.' or '-', starting with a letter or digit",
            )
        if not _IFNAME.match(self.ifname):
            raise CNIRequestError(
                INVALID_ENVIRONMENT, "CNI_IFNAME", self.ifname, "a Linux interface name"
            )
        if self.command != "DEL":
            if not self.netns.startswith("/"):
                raise CNIRequestError(
                    INVALID_ENVIRONMENT,
                    "CNI_NETNS",
                    self.netns,
                    "an absolute path such as /var/run/netns/NAME",
                )
            if not _NAME.match(self.network):
                raise CNIRequestError(
                    INVALID_NETWORK_CONFIG,
                    "network",
                    self.network,
                    'a netmaster network name in the config ("network") '
                    "or CNI_ARGS NETWORK=",
                )
        if not _NAME.match(self.tenant):
            raise CNIRequestError(
                INVALID_NETWORK_CONFIG, "tenant", self.tenant, "a netmaster tenant name"
            )


def parse_cni_args(raw: str) -> dict[str, str]:
    """``K=V;K2=V2`` as in CNI_ARGS; a part without '=' is an error."""
    parsed: dict[str, str] = {}
    for part in filter(None, raw.split(";")):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise CNIRequestError(
                INVALID_ENVIRONMENT, "CNI_ARGS", raw, "KEY=VALUE pairs separated by ';'"
            )
        parsed[key] = value
    return parsed


def error_object(
    code: int, msg: str, details: str = "", version: str = CNI_VERSION
) -> dict[str, Any]:
    return {"cniVersion": version, "code": code, "msg": msg, "details": details}


def error_for(exc: NetpluginError, version: str = CNI_VERSION) -> dict[str, Any]:
    """The CNI error object for one of our errors."""
    if isinstance(exc, CNIRequestError):
        code = exc.code
    elif isinstance(exc, ValidationError):
        code = INVALID_NETWORK_CONFIG
    elif isinstance(exc, RemoteError) and exc.status in (0, 502, 503, 504):
        code = TRY_AGAIN_LATER
    elif isinstance(exc, RemoteError) and exc.status == 404:
        code = INVALID_NETWORK_CONFIG
    elif isinstance(exc, NotFoundError):
        code = UNKNOWN_CONTAINER
    elif isinstance(exc, (AlreadyExistsError, ConflictError, ExhaustedError)):
        code = PLUGIN_FAILURE + 1
    else:
        code = PLUGIN_FAILURE
    return error_object(code, type(exc).__name__, str(exc), version)


def add_result(
    *,
    version: str,
    host_if: str,
    container_if: str,
    mac: str,
    netns: str,
    ip: str,
    prefix_len: int,
    gateway: str,
    default_route: bool = True,
) -> dict[str, Any]:
    """The CNI 1.0.0 ADD result for one interface with one IPv4 address.

    ``default_route`` False: the container's default route stayed on another
    interface, so none is reported for this one.
    """
    result: dict[str, Any] = {
        "cniVersion": version,
        "interfaces": [
            {"name": host_if},
            {"name": container_if, "mac": mac, "sandbox": netns},
        ],
        "ips": [{"address": f"{ip}/{prefix_len}", "interface": 1}],
        "routes": [],
        "dns": {},
    }
    if gateway:
        result["ips"][0]["gateway"] = gateway
        if default_route:
            result["routes"].append({"dst": "0.0.0.0/0", "gw": gateway})
    if version in ("0.3.0", "0.3.1"):
        result["ips"][0]["version"] = "4"
    return result

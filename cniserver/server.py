"""The agent's cniserver: an aiohttp app on a unix socket only its owner can use.

Routes ``POST /cni/v1/add|del|check`` take a CNIRequest and hand it to a
backend (the agent). Answers are a CNI result, ``{}`` for DEL and CHECK, or a
CNI error object with a 4xx/5xx status.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from api.errors import NetpluginError
from cniserver import types as cni

log = logging.getLogger(__name__)


class CNIBackend(Protocol):
    async def cni_add(self, request: cni.CNIRequest) -> dict[str, Any]: ...

    async def cni_del(self, request: cni.CNIRequest) -> None: ...

    async def cni_check(self, request: cni.CNIRequest) -> None: ...


class CNIServer:
    """Serves ``backend`` on ``socket_path`` between start() and stop()."""

    def __init__(self, socket_path: str, backend: CNIBackend) -> None:
        self.socket_path = socket_path
        self.backend = backend
        self._runner: web.AppRunner | None = None

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/cni/v1/{command}", self._handle)
        return app

    async def start(self) -> None:
        path = Path(self.socket_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        self._runner = web.AppRunner(self._app(), access_log=None)
        await self._runner.setup()
        # The socket is created 0600: whoever can post here can wire containers.
        old_umask = os.umask(0o177)
        try:
            await web.UnixSite(self._runner, str(path)).start()
        finally:
            os.umask(old_umask)
        log.info("cniserver listening socket=%s", path)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        Path(self.socket_path).unlink(missing_ok=True)

    async def _handle(self, http_request: web.Request) -> web.Response:
        version = cni.CNI_VERSION
        try:
            try:
                body = await http_request.json()
            except json.JSONDecodeError as exc:
                raise cni.CNIRequestError(
                    cni.DECODE_FAILURE, "body", None, f"JSON ({exc})"
                ) from exc
            request = cni.CNIRequest.from_json(body)
            version = request.cni_version
            command = http_request.match_info["command"].upper()
            if command != request.command:
                raise cni.CNIRequestError(
                    cni.INVALID_ENVIRONMENT, "command", command, request.command
                )
            log.info(
                "cni request command=%s container_id=%s ifname=%s netns=%s",
                request.command,
                request.container_id,
                request.ifname,
                request.netns,
            )
            if request.command == "ADD":
                return web.json_response(await self.backend.cni_add(request))
            if request.command == "DEL":
                await self.backend.cni_del(request)
            else:
                await self.backend.cni_check(request)
            return web.json_response({})
        except NetpluginError as exc:
            log.warning("cni request failed error=%s", exc)
            status = 400 if isinstance(exc, cni.CNIRequestError) else 500
            return web.json_response(cni.error_for(exc, version), status=status)
        except Exception as exc:
            # A bug, not a refusal: keep the traceback in the agent's log, and
            # still answer the runtime with a CNI error object it can parse.
            log.exception("cni request crashed")
            body = cni.error_object(
                cni.PLUGIN_FAILURE,
                "internal error",
                f"{type(exc).__name__}: {exc}",
                version,
            )
            return web.json_response(body, status=500)

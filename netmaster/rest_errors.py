"""How netmaster words a refused request: validation errors and unknown routes.

Bodies have api.errors' shape, ``{"error": ClassName, "message": ...}``, plus
``field``/``value``/``expected``/``errors`` for validation errors. A field is
named by its path inside the body (``body`` for the body as a whole), a name
pattern by the form it stands for, and every echoed piece of the request is
clipped to ``ECHO_LIMIT`` characters so that a 3 MB value does not come back
as a 6 MB answer.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from fastapi.exceptions import RequestValidationError

from api.errors import ValidationError
from api.objects import PATTERN_FORMS
from netmaster.registry import KINDS

PREFIX = "/api/v1"

#: Characters of the request echoed in any one place of an error body.
ECHO_LIMIT = 200
#: Entries of a validation error's ``errors`` list; the rest are counted.
MAX_ERRORS = 20

#: The ``host`` filter of the watch stream.
HOST_FILTER_PATTERN = r"^[A-Za-z0-9_.-]{0,64}$"

_PATTERN_FORMS = {
    **PATTERN_FORMS,
    HOST_FILTER_PATTERN: "empty, or up to 64 letters, digits, '_', '.' or '-'",
}

#: Error class names for Starlette's own refusals.
_HTTP_ERRORS = {404: "NotFoundError", 405: "MethodNotAllowedError"}


def clip(text: str, limit: int = ECHO_LIMIT) -> str:
    """``text``, cut to ``limit`` characters with a note of its full length."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…({len(text)} chars)"


def clip_body(body: dict[str, Any]) -> dict[str, Any]:
    """An error body with its echoed strings clipped (``errors`` is built clipped)."""
    for name in ("field", "value", "expected", "message"):
        if isinstance(body.get(name), str):
            body[name] = clip(body[name])
    return body


def _expected(error: Any) -> str:
    """What one pydantic (or FastAPI) error says the value should have been."""
    kind, ctx = error.get("type"), error.get("ctx") or {}
    if kind == "string_pattern_mismatch" and ctx.get("pattern") in _PATTERN_FORMS:
        return _PATTERN_FORMS[ctx["pattern"]]
    if kind == "model_attributes_type" and tuple(error.get("loc", ())) == ("body",):
        return "a JSON object (Content-Type: application/json)"
    return str(error.get("msg", "invalid request")).removeprefix("Value error, ")


def validation_body(exc: RequestValidationError) -> dict[str, Any]:
    """The 400 body for a request FastAPI could not validate."""
    errors = exc.errors()
    first = errors[0] if errors else {}
    cause = (first.get("ctx") or {}).get("error")
    if first.get("type") == "json_invalid":
        # FastAPI puts the offset where a field would go: ("body", 17).
        offset = first["loc"][-1]
        field, value, expected = "body", repr(exc.body), "a JSON object"
        message = f"body is not valid JSON at offset {offset}: {cause}"
    else:
        if isinstance(cause, ValidationError):
            # api.objects raises these to word the expected form itself.
            field, value, expected = cause.field, repr(cause.value), cause.expected
        else:
            location = [str(p) for p in first.get("loc", ()) if p != "body"]
            field = ".".join(location) or "body"
            # A missing field's input is the object around it: not worth echoing.
            missing = first.get("type") == "missing"
            value = "" if missing else repr(first.get("input"))
            expected = _expected(first)
        message = (
            f"{field}={clip(value)}: {expected}" if value else f"{field}: {expected}"
        )
    listed = [
        {"loc": [clip(str(p)) for p in e.get("loc", ())], "msg": clip(_expected(e))}
        for e in errors[:MAX_ERRORS]
        if e.get("type") != "json_invalid"
    ] or [{"loc": ["body"], "msg": message}]
    if len(errors) > MAX_ERRORS:
        listed.append({"loc": [], "msg": f"{len(errors) - MAX_ERRORS} more not shown"})
    body = {
        "error": "ValidationError",
        "field": field,
        "value": value,
        "expected": expected,
        "message": message,
        "errors": listed,
    }
    return clip_body(body)


class RouteHints:
    """Words the 404 and 405 answers of routes that do not exist under /api/v1/."""

    def __init__(self, route_paths: Iterable[str]) -> None:
        #: First path segments under /api/v1/ that some route serves.
        self.known = {
            first
            for path in route_paths
            if path.startswith(f"{PREFIX}/")
            and (first := path[len(PREFIX) + 1 :].split("/", 1)[0])
            and not first.startswith("{")
        }
        #: Object collections and their key forms, aliases included.
        self.key_forms = {"endpoints": "containerID:ifname"}
        for kind in KINDS.values():
            for plural in (kind.plural, *kind.aliases):
                self.key_forms[plural] = kind.key_form
        self.collections = sorted(
            [kind.plural for kind in KINDS.values()] + ["endpoints"], key=str.lower
        )

    def body(
        self, status: int, detail: str, method: str, path: str, allow: str
    ) -> dict[str, Any]:
        """The error body for Starlette's refusal ``status`` of ``method path``."""
        message = detail
        if status == 404:
            message = self._not_found(path) or detail
        elif status == 405:
            message = self._not_allowed(method, path, allow) or detail
        body = {"error": _HTTP_ERRORS.get(status, "HTTPError"), "message": message}
        return clip_body(body)

    def _not_found(self, path: str) -> str | None:
        if not path.startswith(f"{PREFIX}/"):
            return None
        parts = path[len(PREFIX) + 1 :].split("/")
        if parts[0] == "inspect" and len(parts) > 2:
            parts = parts[1:]
        name = parts[0]
        if name in self.key_forms:
            return (
                f"no route {clip(path)}; {name} are at {PREFIX}/{name}/ and "
                f"{PREFIX}/{name}/<{self.key_forms[name]}>/"
            )
        if name in self.known:
            return None
        by_lower = {c.lower(): c for c in self.key_forms}
        close = difflib.get_close_matches(name.lower(), by_lower, n=1)
        hint = f" (did you mean {by_lower[close[0]]!r}?)" if close else ""
        return (
            f"no collection {clip(name)!r} under {PREFIX}/{hint}; collections: "
            f"{', '.join(self.collections)}"
        )

    def _not_allowed(self, method: str, path: str, allow: str) -> str | None:
        name = path.removeprefix(f"{PREFIX}/").removesuffix("/")
        if path == f"{PREFIX}/{name}/" and name in self.key_forms and method != "GET":
            return (
                f"{method} {path} is not allowed: the key goes in the path, "
                f"{method} {PREFIX}/{name}/<{self.key_forms[name]}>/"
            )
        return f"{method} is not allowed on {clip(path)}; allowed: {allow}"

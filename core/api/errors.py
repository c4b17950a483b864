"""One error shape for every API failure, and the middleware that produces it.

Body: ``{"code": "snake_case", "message": "what happened and what to do", "details": {}}``.
Domain errors (:mod:`pcapwire.errors`) map to 4xx; anything unexpected is logged with its
traceback and answered with a bare 500 (no internals leak to the client).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pcapwire.errors import (
    CaptureFormatError,
    ConfigError,
    PcapwireError,
    PluginError,
    QueryError,
    WorkflowError,
)

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

DOMAIN_ERRORS: tuple[tuple[type[PcapwireError], int, str], ...] = (
    (QueryError, 400, "invalid_query"),
    (WorkflowError, 400, "invalid_workflow"),
    (CaptureFormatError, 400, "invalid_capture"),
    (ConfigError, 400, "invalid_config"),
    (PluginError, 400, "plugin_error"),
    (PcapwireError, 400, "error"),
)

HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 409: "conflict", 413: "body_too_large",
              415: "unsupported_media_type", 422: "unprocessable", 429: "too_many_requests"}


class ApiError(Exception):
    """An error the API answers with ``status`` and the stable JSON shape."""

    def __init__(self, status: int, code: str, message: str,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}


def error_body(code: str, message: str, details: dict[str, Any] | None = None
               ) -> dict[str, Any]:
    return {"code": code, "message": message, "details": details or {}}


def json_error(status: int, code: str, message: str, details: dict[str, Any] | None = None,
               headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(error_body(code, message, details), status=status, headers=headers)


def not_found(what: str, ident: str) -> ApiError:
    return ApiError(404, "not_found", f"no {what} {ident!r} in your tenant", {what: ident})


#: Status logged for a response the client did not wait for.
CLIENT_CLOSED = 499


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return json_error(exc.status, exc.code, exc.message, exc.details, headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 413:
            return json_error(413, "body_too_large", f"the request body is too large: {exc.text}",
                              {"limit_name": "max_body_bytes"})
        code = HTTP_CODES.get(exc.status, "http_error")
        return json_error(exc.status, code, exc.reason, headers={
            k: v for k, v in exc.headers.items() if k.lower() == "allow"})
    except PcapwireError as exc:
        for cls, status, code in DOMAIN_ERRORS:
            if isinstance(exc, cls):
                return json_error(status, code, str(exc))
        raise  # unreachable: PcapwireError is the last entry
    except ConnectionResetError:
        # The client went away mid-response (closed an SSE stream, stopped a download):
        # not an error of ours. The answer goes nowhere; aiohttp drops it quietly and the
        # access log shows 499 (nginx's "client closed request").
        log.debug("client closed %s %s before the response ended", request.method,
                  request.path)
        return web.Response(status=CLIENT_CLOSED)
    except TimeoutError:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_error(500, "internal_error", "internal server error; see the server log")

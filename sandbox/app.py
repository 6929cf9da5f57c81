"""The sandbox FastAPI app: Apex and Flourish routes, admin hooks, the gateway."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from sandbox import (
    admin,
    apex,
    apex_batches,
    apex_orders,
    flourish,
    flourish_orders,
    gateway,
)
from sandbox.errors import ApiError, HtmlPageRequired
from sandbox.responses import respond
from sandbox.state import SandboxState

#: Login page returned to a request without ``Accept: application/json``.
LOGIN_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Apex Trading | Log In</title></head>
<body><div id="app"><h1>Log in to Apex Trading</h1>
<form method="POST" action="/login"><input name="email">
<input name="password" type="password">
<button type="submit">Log In</button></form></div></body></html>
"""


class SandboxApp(FastAPI):
    """FastAPI app whose HTTP requests pass through the sandbox gateway first."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        await gateway.handle(self.state.sandbox, scope, receive, send, super().__call__)


def create_app(state: SandboxState | None = None) -> FastAPI:
    """Build the app over ``state`` (a freshly seeded one when omitted)."""
    app = SandboxApp(
        title="apexsync sandbox", docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.sandbox = state or SandboxState.seeded()
    for module in (apex, apex_batches, apex_orders, flourish, flourish_orders, admin):
        app.include_router(module.router)

    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HtmlPageRequired, _html_page)
    app.add_exception_handler(HTTPException, _http_error)
    return app


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return respond(exc.body, exc.status, exc.headers)


async def _html_page(request: Request, exc: Exception) -> Response:
    return HTMLResponse(LOGIN_PAGE, status_code=200)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Render unknown routes and methods in each API's own error shape."""
    assert isinstance(exc, HTTPException)
    api = gateway.api_of(request.url.path)
    if api == "apex":
        message = "Resource Not Found" if exc.status_code == 404 else str(exc.detail)
        return respond({"message": message}, exc.status_code, exc.headers)
    if api == "flourish":
        return respond(
            {"message": str(exc.detail), "status": exc.status_code},
            exc.status_code,
            exc.headers,
        )
    return respond({"detail": exc.detail}, exc.status_code, exc.headers)

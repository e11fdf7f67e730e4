"""The operator console (server-rendered Vietnamese pages) and the JSON API `/api/v1`,
served by the station process (`thanthien station run`, section [web] of its config).

``create_app(service_or_config)`` builds the FastAPI app: with a running
``StationService`` it can also send emergencies and technician commands over MQTT; with
only a ``StationConfig`` it works on the database alone (those actions then say the
station is not connected).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from devices.errors import ValidationError

from .core import BodyLimit, Console, LoginRequired, api_error, validation_response

log = logging.getLogger("thanthien.web")
HERE = Path(__file__).resolve().parent

FIELD_VI = {"missing": "bắt buộc", "string_too_long": "quá dài", "string_too_short": "quá ngắn",
            "int_parsing": "phải là số nguyên", "less_than_equal": "quá lớn", "greater_than_equal": "quá nhỏ",
            "literal_error": "giá trị không hợp lệ", "enum": "giá trị không hợp lệ", "json_invalid": "không phải JSON",
            "string_pattern_mismatch": "sai định dạng", "bool_parsing": "phải là true/false",
            "model_attributes_type": "phải là đối tượng JSON", "list_type": "phải là danh sách",
            "string_type": "phải là chuỗi", "int_type": "phải là số nguyên", "dict_type": "phải là đối tượng JSON"}


def create_app(service_or_config) -> FastAPI:
    from . import api, kiosk_api, pages

    console = Console(service_or_config)
    app = FastAPI(title=f"thanthien station — {console.cfg.ward_name}", version="1",
                  description="JSON API of the ward station (docs/console.md, docs/kiosk-api.md). "
                              "Scripts and kiosks authenticate with `Authorization: Bearer <token>`.",
                  docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    app.state.console = console
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.include_router(kiosk_api.router)
    app.include_router(api.router)
    app.include_router(pages.router)

    @app.exception_handler(LoginRequired)
    async def _login(request: Request, exc: LoginRequired):
        nxt = request.url.path if request.method == "GET" else "/"
        return RedirectResponse(f"/login?next={nxt}", status_code=303)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        loc = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or "body"
        vi = FIELD_VI.get(first.get("type", ""), "không hợp lệ")
        return api_error(422, loc, str(first.get("msg", "invalid"))[:300], f"Trường {loc}: {vi}")

    @app.exception_handler(ValidationError)
    async def _validation(request: Request, exc: ValidationError):
        return validation_response(exc)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        if request.url.path.startswith("/api/") or request.url.path == "/openapi.json":
            return api_error(exc.status_code, "request", str(exc.detail), str(exc.detail), "http")
        sess = getattr(request.state, "session", None)
        if sess is None and exc.status_code == 404:
            return HTMLResponse("<!doctype html><meta charset=utf-8><title>Không tìm thấy</title>"
                                "<p>Không tìm thấy trang. <a href=/>Về trang chính</a></p>", status_code=404)
        return console.render(request, "error.html", {"status": exc.status_code, "message": exc.detail},
                              status=exc.status_code)

    @app.middleware("http")
    async def _headers(request: Request, call_next):
        import time

        t0 = time.perf_counter()
        response = await call_next(request)
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - t0) * 1000:.1f}"
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if response.headers.get("content-type", "").startswith("text/html"):
            response.headers.setdefault("Content-Security-Policy",
                                        "default-src 'self'; img-src 'self' data:; media-src 'self' blob:; "
                                        "style-src 'self'; script-src 'self'; frame-ancestors 'none'")
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    upload = console.cfg.web.max_upload_bytes + 256 * 1024
    app.add_middleware(BodyLimit, caps={"/bulletins/new": upload, "/emergency": upload})
    return app


class WebServer:
    """uvicorn in a thread of the station process."""

    def __init__(self, service_or_config, host: str | None = None, port: int | None = None):
        import uvicorn

        self.app = create_app(service_or_config)
        web = self.app.state.console.cfg.web
        self.config = uvicorn.Config(self.app, host=host or web.host, port=web.port if port is None else port,
                                     log_level="warning", access_log=False, proxy_headers=False,
                                     timeout_keep_alive=5, limit_concurrency=200)
        self.server = uvicorn.Server(self.config)
        self._thread = threading.Thread(target=self.server.run, name="web", daemon=True)

    def start(self, timeout: float = 10.0) -> "WebServer":
        import time

        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.02)
        if not self.server.started:
            raise RuntimeError(f"the web console could not listen on {self.config.host}:{self.config.port}")
        log.info("console at http://%s:%d/", self.config.host, self.port)
        return self

    @property
    def port(self) -> int:
        for server in self.server.servers:
            for sock in server.sockets:
                return sock.getsockname()[1]
        return self.config.port

    def close(self) -> None:
        self.server.should_exit = True
        self._thread.join(10)

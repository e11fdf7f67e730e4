"""What every console handler shares: the station context (config, optional running
service, one SQLite connection per worker thread), authentication for pages (session
cookie + CSRF) and for the API (bearer tokens), request body caps, and error shapes.

Handlers only translate between HTTP and the functions in ``broadcast``; a
``ValidationError`` from those functions becomes a message shown at the form field it
names (its text starts with the field's Vietnamese label) or a 422 JSON body.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from devices.errors import ValidationError
from devices.sqlite import connect

from .. import auth
from ..areas import Actor, Role
from ..config import StationConfig
from ..db import open_db
from ..media import MediaLibrary
from ..tts import TextToSpeech

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "tt_session"
LOGIN_CSRF_COOKIE = "tt_login_csrf"
DEFAULT_BODY_CAP = 1024 * 1024 + 4096  # JSON bodies and forms without files (kiosk: 1 MiB)
ROLE_VI = {"operator": "Phát thanh viên", "approver": "Người duyệt", "technician": "Kỹ thuật viên",
           "viewer": "Người xem", "admin": "Quản trị"}
LEVEL_VI = {"normal": "thông thường", "priority": "ưu tiên", "emergency": "khẩn cấp"}
ACTION_VI = {"login": "đăng nhập", "login.failed": "đăng nhập sai", "login.locked": "bị chặn đăng nhập",
             "logout": "đăng xuất", "user.add": "thêm người dùng", "user.password": "đặt mật khẩu",
             "bulletin.create": "soạn bản tin", "bulletin.edit": "sửa bản tin", "bulletin.submit": "gửi duyệt",
             "bulletin.approve": "duyệt", "bulletin.reject": "từ chối", "bulletin.cancel": "hủy bản tin",
             "bulletin.schedule": "bản tin đã lên lịch", "bulletin.emergency_approve": "duyệt phát khẩn cấp",
             "schedule.add": "thêm lịch phát", "schedule.stop": "dừng lịch phát", "emergency.send": "phát khẩn cấp", "group.save": "lưu tổ",
             "device.save": "lưu loa", "device.test_tone": "phát thử âm", "device.identify": "nhận diện loa",
             "device.restart": "khởi động lại loa", "device.volume": "đặt âm lượng", "token.add": "cấp mã truy cập",
             "token.revoke": "thu hồi mã truy cập", "catalogue.import": "nhập danh mục thủ tục",
             "key.rotate": "bắt đầu đổi khóa ký", "key.finish": "hoàn tất đổi khóa ký"}


class Console:
    """The station as the console sees it."""

    def __init__(self, service_or_config):
        from ..service import StationService

        if isinstance(service_or_config, StationService):
            self.svc, self.cfg = service_or_config, service_or_config.cfg
        elif isinstance(service_or_config, StationConfig):
            self.svc, self.cfg = None, service_or_config
        else:
            raise TypeError("create_app() takes a StationService or a StationConfig")
        self.db_path = self.cfg.data_dir / "station.db"
        open_db(self.db_path).conn.close()  # schema current before any request
        self.secret = auth.load_or_create_secret(self.cfg.session_secret_path)
        self.limiter = auth.LoginLimiter(self.cfg.web.login_max_failures, self.cfg.web.login_window_s)
        self.media_dir = self.cfg.data_dir / "media"
        self.tts = TextToSpeech.from_settings(self.cfg.data_dir / "tts-cache", self.cfg.tts)
        self.tz = self.cfg.timezone
        self.zone = ZoneInfo(self.tz)
        self._local = threading.local()
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        env = self.templates.env
        env.globals.update(ward_name=self.cfg.ward_name, ROLE_VI=ROLE_VI, LEVEL_VI=LEVEL_VI, ACTION_VI=ACTION_VI)
        env.filters["when"] = self.fmt_time
        env.filters["day"] = self.fmt_day
        env.filters["ago"] = fmt_ago
        env.filters["mb"] = fmt_size
        env.filters["detail"] = fmt_detail

    @property
    def db(self):
        conn = getattr(self._local, "db", None)
        if conn is None:
            conn = self._local.db = connect(self.db_path, "the station database")
        return conn

    def library(self) -> MediaLibrary:
        return MediaLibrary(self.db, self.media_dir, self.cfg.web.max_upload_bytes)

    @property
    def horizon_ms(self) -> int:
        return self.cfg.schedule_horizon_h * 3_600_000

    @property
    def online(self) -> bool:
        return self.svc is not None and self.svc.mqtt.connected

    def fmt_time(self, ms) -> str:
        if not ms:
            return "—"
        return dt.datetime.fromtimestamp(ms / 1000, self.zone).strftime("%H:%M:%S %d/%m/%Y")

    def fmt_day(self, ms) -> str:
        if not ms:
            return "—"
        return dt.datetime.fromtimestamp(ms / 1000, self.zone).strftime("%d/%m/%Y")

    def parse_local(self, text: str, field: str, label: str) -> int:
        """'YYYY-MM-DDTHH:MM[:SS]' (an HTML datetime-local) in the ward's zone → ms."""
        text = (text or "").strip()
        for fmt in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"):
            try:
                return int(dt.datetime.strptime(text, fmt).replace(tzinfo=self.zone).timestamp() * 1000)
            except ValueError:
                continue
        raise FieldError(field, f"{label}: nhập ngày giờ dạng 2026-12-01 06:30")

    def parse_date(self, text: str, field: str, label: str) -> int:
        try:
            d = dt.datetime.strptime((text or "").strip(), "%Y-%m-%d")
        except ValueError:
            raise FieldError(field, f"{label}: nhập ngày dạng 2026-12-01") from None
        if not 2000 <= d.year <= 2100:
            raise FieldError(field, f"{label}: năm từ 2000 đến 2100")
        return int(d.replace(tzinfo=self.zone).timestamp() * 1000)

    def render(self, request: Request, name: str, ctx: dict, status: int = 200):
        sess = getattr(request.state, "session", None)
        base = {"request": request, "session": sess, "user": sess.actor if sess else None,
                "csrf": sess.csrf if sess else "", "nav": request.url.path, "station_online": self.online}
        return self.templates.TemplateResponse(request, name, {**base, **ctx}, status_code=status)


def fmt_detail(detail) -> str:
    """An audit detail as readable text (Vietnamese as is, not \\u escapes)."""
    if isinstance(detail, dict):
        return "; ".join(f"{k}: {v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}"
                         for k, v in detail.items() if v not in (None, [], {}))
    return "" if detail is None else str(detail)


def fmt_size(b) -> str:
    """Bytes in Vietnamese notation (decimal comma): 812 MB, 1,9 GB."""
    if b is None:
        return "—"
    if b >= 1024 ** 3:
        return f"{b / 1024 ** 3:.1f} GB".replace(".", ",")
    return f"{b / 1_048_576:.0f} MB"


def fmt_ago(ms) -> str:
    if not ms:
        return "chưa bao giờ"
    from ..db import now_ms

    s = max(0, (now_ms() - ms) // 1000)
    if s < 60:
        return f"{s} giây trước"
    if s < 3600:
        return f"{s // 60} phút trước"
    if s < 86400:
        return f"{s // 3600} giờ trước"
    return f"{s // 86400} ngày trước"


# --- errors ------------------------------------------------------------------------------

class FieldError(ValidationError):
    """A web-layer check on one named field (types, dates), message in Vietnamese."""

    def __init__(self, field: str, message: str):
        super().__init__([message])
        self.field = field


def errors_by_field(exc: ValidationError, labels: dict[str, str]) -> dict[str, list[str]]:
    """Place each problem at the form field whose Vietnamese label it starts with
    (``labels`` maps label → field name); the rest go to ``_form``."""
    out: dict[str, list[str]] = {}
    if isinstance(exc, FieldError):
        return {exc.field: exc.problems}
    for problem in exc.problems:
        head = problem.split(":", 1)[0].strip().lower()
        out.setdefault(labels.get(head, "_form"), []).append(problem)
    return out


def api_error(status: int, field: str, message: str, message_vi: str, error: str = "invalid") -> JSONResponse:
    return JSONResponse({"error": error, "field": field, "message": message, "message_vi": message_vi},
                        status_code=status)


def validation_response(exc: ValidationError, field: str = "body") -> JSONResponse:
    f = getattr(exc, "field", None) or field
    if not getattr(exc, "field", None) and exc.problems:
        f = exc.problems[0].split(":", 1)[0] if ":" in exc.problems[0] else field
    status = 403 if f.strip().lower() == "quyền" else 422  # the role may not do this
    return api_error(status, f, "; ".join(exc.problems), "; ".join(exc.problems), "forbidden" if status == 403
                     else "invalid")


# --- authentication ----------------------------------------------------------------------

class LoginRequired(Exception):
    pass


def page_session(request: Request, roles: tuple[Role, ...] | None = None) -> auth.Session:
    """The logged-in session of a page request, or a redirect to the login page."""
    console: Console = request.app.state.console
    sess = auth.session_for(console.db, console.secret, request.cookies.get(SESSION_COOKIE))
    if sess is None:
        raise LoginRequired()
    request.state.session = sess
    if roles and sess.actor.role not in roles and sess.actor.role is not Role.ADMIN:
        raise HTTPException(403, "Tài khoản của bạn không có quyền xem trang này")
    return sess


async def check_csrf(request: Request, sess: auth.Session) -> dict:
    """The submitted form, once its CSRF token matches the session's."""
    form = await request.form()
    token = form.get("csrf") or request.headers.get("x-csrf-token") or ""
    if not isinstance(token, str) or not secrets.compare_digest(token, sess.csrf):
        raise HTTPException(403, "Phiên làm việc đã hết hạn hoặc biểu mẫu không hợp lệ; hãy tải lại trang")
    return form


@dataclass(frozen=True)
class ApiCaller:
    kind: str          # "user" (token or session) or "kiosk"
    subject: str       # username or kiosk id
    actor: Actor | None


def bearer(request: Request) -> str | None:
    h = request.headers.get("authorization") or ""
    scheme, _, token = h.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def api_caller(request: Request) -> ApiCaller | None:
    """Who calls the API: a bearer token (kiosk or user), or a console session (then a
    state-changing request must carry the session's CSRF token in X-CSRF-Token)."""
    from ..kiosk_feed import token_subject

    console: Console = request.app.state.console
    token = bearer(request)
    if token:
        found = token_subject(console.db, token)
        if found is None:
            return None
        kind, subject = found
        if kind == "kiosk":
            return ApiCaller("kiosk", subject, None)
        row = console.db.execute("SELECT role FROM users WHERE username = ?", [subject]).fetchone()
        return ApiCaller("user", subject, Actor(subject, Role(row[0]))) if row else None
    sess = auth.session_for(console.db, console.secret, request.cookies.get(SESSION_COOKIE))
    if sess is None:
        return None
    if request.method not in ("GET", "HEAD"):
        token = request.headers.get("x-csrf-token") or ""
        if not secrets.compare_digest(token, sess.csrf):
            return None
    return ApiCaller("user", sess.actor.username, sess.actor)


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


# --- request body caps -------------------------------------------------------------------

class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware refusing a body over its route's cap before it reaches the disk:
    at once by Content-Length, or as soon as the streamed bytes pass the cap."""

    def __init__(self, app, caps: dict[str, int], default: int = DEFAULT_BODY_CAP):
        self.app, self.caps, self.default = app, caps, default

    def cap_for(self, path: str) -> int:
        for prefix, cap in self.caps.items():
            if path.startswith(prefix):
                return cap
        return self.default

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        cap = self.cap_for(scope.get("path", ""))
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > cap
            except ValueError:
                too_big = True
            if too_big:
                return await self._refuse(scope, send, cap)
        seen = 0
        started = False

        async def counting_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap:
                    raise BodyTooLarge()
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(scope, send, cap)
        except Exception as exc:  # the form parser wraps errors raised by receive()
            if isinstance(exc.__cause__ or exc.__context__, BodyTooLarge) and not started:
                await self._refuse(scope, send, cap)
            else:
                raise

    async def _refuse(self, scope, send, cap: int):
        mb = cap / 1_048_576
        vi = f"Tệp hoặc nội dung quá lớn: tối đa {mb:.0f} MB" if mb >= 2 else "Nội dung gửi quá lớn: tối đa 1 MB"
        body = json.dumps({"error": "too_large", "field": "body", "message": f"request body over {cap} bytes",
                           "message_vi": vi}, ensure_ascii=False).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

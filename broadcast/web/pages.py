"""Server-rendered console pages. Each handler checks the session (and the CSRF token
of a form), calls the functions in ``broadcast`` and renders the answer; problems come
back at the form field they name."""

from __future__ import annotations

import datetime as dt
import re
import secrets

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response

from devices import protocol as p
from devices.errors import ThanthienError, ValidationError

from .. import areas, auth, bulletins, dashboard, kiosk_feed, reports, schedules
from ..areas import Role
from ..db import now_ms
from ..media import SHA_RE
from . import api
from .core import (LOGIN_CSRF_COOKIE, SESSION_COOKIE, Console, FieldError, check_csrf, errors_by_field, page_session,
                   redirect)

router = APIRouter(include_in_schema=False)

WRITERS = (Role.OPERATOR, Role.APPROVER)
APPROVERS = (Role.APPROVER,)
TECH = (Role.TECHNICIAN,)
BULLETIN_LABELS = {"tiêu đề": "title", "mức độ": "level", "nội dung": "text", "tệp": "audio",
                   "tệp âm thanh": "audio", "lý do": "reason", "quyền": "_form", "bản tin": "_form"}
SCHEDULE_LABELS = {"thời gian": "at", "ngày kết thúc": "until", "ngày trong tuần": "weekdays",
                   "ngày trong tháng": "monthday", "rrule": "rrule", "kiểu lịch": "kind", "nơi phát": "targets",
                   "bản tin": "bulletin_id", "số lần phát lại": "repeat", "giờ yên tĩnh": "targets",
                   "địa chỉ luồng": "relay_url", "thời lượng tiếp sóng": "relay_minutes"}
GROUP_LABELS = {"mã tổ": "code", "tên tổ": "name", "gps": "gps", "giờ yên tĩnh bắt đầu": "quiet_start",
                "giờ yên tĩnh kết thúc": "quiet_end", "giờ yên tĩnh": "quiet_start"}
DEVICE_LABELS = {"mã loa": "id", "tổ": "groups", "gps": "gps", "âm lượng": "volume", "âm lượng tối đa": "max_volume",
                 "âm lượng khẩn cấp": "emergency_volume", "tên loa": "name"}
EMERGENCY_CONFIRM = "PHÁT KHẨN CẤP"


def console_of(request: Request) -> Console:
    return request.app.state.console


def _text(form, key: str, limit: int = 20_000) -> str:
    v = form.get(key)
    return v.strip()[:limit] if isinstance(v, str) else ""


def _int(form, key: str, label: str, lo: int, hi: int, default: int | None = None) -> int | None:
    raw = _text(form, key, 20)
    if raw == "":
        if default is None:
            return None
        return default
    try:
        v = int(raw)
    except ValueError:
        raise FieldError(key, f"{label}: nhập một số nguyên") from None
    if not lo <= v <= hi:
        raise FieldError(key, f"{label}: từ {lo} đến {hi}")
    return v


def _float(form, key: str, label: str) -> float | None:
    raw = _text(form, key, 40).replace(",", ".")
    if raw == "":
        return None
    try:
        return float(raw)
    except ValueError:
        raise FieldError("gps" if key in ("lat", "lon") else key, f"{label}: nhập một số, ví dụ 14.4213") from None


async def _form(request: Request, roles=None):
    sess = page_session(request, roles)
    form = await check_csrf(request, sess)
    return sess, form


# --- login -------------------------------------------------------------------------------

@router.get("/login")
def login_page(request: Request, next: str = "/"):
    console = console_of(request)
    token = secrets.token_urlsafe(16)
    resp = console.render(request, "login.html", {"login_csrf": token, "next": _safe_next(next), "errors": {}})
    resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=console.cfg.web.secure_cookies,
                    max_age=3600)
    return resp


def _safe_next(url: str) -> str:
    return url if isinstance(url, str) and re.fullmatch(r"/[A-Za-z0-9/_\-?=&.%]*", url or "") \
        and not url.startswith("//") else "/"


@router.post("/login")
async def login(request: Request):
    console = console_of(request)
    form = await request.form()
    username = _text(form, "username", 64).lower()
    password = form.get("password") if isinstance(form.get("password"), str) else ""
    nxt = _safe_next(_text(form, "next", 200))
    ip = request.client.host if request.client else "?"
    cookie_token = request.cookies.get(LOGIN_CSRF_COOKIE) or ""
    form_token = _text(form, "csrf", 100)
    errors: dict[str, list[str]] = {}
    status = 400
    if not cookie_token or not secrets.compare_digest(cookie_token, form_token):
        errors["_form"] = ["Biểu mẫu đã hết hạn; hãy tải lại trang và đăng nhập lại"]
        status = 403
    elif not username:
        errors["username"] = ["Tên đăng nhập: bắt buộc"]
    elif not password:
        errors["password"] = ["Mật khẩu: bắt buộc"]
    else:
        keys = (f"user:{username}", f"ip:{ip}")
        wait = console.limiter.retry_after(*keys)
        if wait > 0:
            errors["_form"] = [f"Đăng nhập sai quá nhiều lần; hãy thử lại sau {int(wait // 60) + 1} phút"]
            status = 429
            await run_in_threadpool(_audit_login, console, username, ip, "login.locked")
        else:
            actor = await run_in_threadpool(
                lambda: auth.authenticate(console.db, username, password[:auth.MAX_PASSWORD]))
            if actor is None:
                console.limiter.failed(*keys)
                await run_in_threadpool(_audit_login, console, username, ip, "login.failed")
                errors["_form"] = ["Sai tên đăng nhập hoặc mật khẩu"]
                status = 401
            else:
                console.limiter.succeeded(keys[0])
                cookie = await run_in_threadpool(lambda: auth.open_session(console.db, console.secret, actor,
                                                 console.cfg.web.session_hours, ip))
                resp = redirect(nxt)
                resp.set_cookie(SESSION_COOKIE, cookie, httponly=True, samesite="strict",
                                secure=console.cfg.web.secure_cookies, max_age=int(console.cfg.web.session_hours * 3600))
                resp.delete_cookie(LOGIN_CSRF_COOKIE)
                return resp
    token = secrets.token_urlsafe(16)
    resp = console.render(request, "login.html", {"login_csrf": token, "next": nxt, "errors": errors,
                                                  "username": username}, status=status)
    resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=console.cfg.web.secure_cookies,
                    max_age=3600)
    return resp


def _audit_login(console: Console, username: str, ip: str, action: str) -> None:
    from ..db import transaction

    with transaction(console.db):
        areas.audit(console.db, username[:64] or "?", action, "user", username[:64] or "?", {"ip": ip})


@router.post("/logout")
async def logout(request: Request):
    console = console_of(request)
    sess, _form_ = await _form(request)
    cookie = request.cookies.get(SESSION_COOKIE)
    await run_in_threadpool(lambda: auth.close_session(console.db, cookie, sess.actor))
    resp = redirect("/login")
    resp.delete_cookie(SESSION_COOKIE)
    return resp


# --- dashboard ---------------------------------------------------------------------------

@router.get("/")
def home(request: Request, group: str | None = None, problems: bool = False):
    console = console_of(request)
    page_session(request)
    rows = dashboard.nodes(console.db, console.cfg.offline_alert_minutes)
    group = group[:64] if group else None
    shown = dashboard.filtered(rows, group, problems)
    return console.render(request, "dashboard.html", {"nodes": shown, "summary": dashboard.summary(rows),
                                                      "title": "Tổng quan", "groups": areas.all_groups(console.db),
                                                      "group": group, "problems": problems})


# --- bulletins ---------------------------------------------------------------------------

def _bulletin_rows(db, where: str = "", args: list | None = None, limit: int = 200) -> list[dict]:
    rows = db.execute("SELECT b.id, b.title, b.level, b.state, b.author, b.audio_sha256, b.audio_fallback, "
                      "b.updated_at, m.duration_ms FROM bulletins b LEFT JOIN media m ON m.sha256 = b.audio_sha256 "
                      + where + " ORDER BY b.id DESC LIMIT ?", (args or []) + [limit]).fetchall()
    return [dict(id=r[0], title=r[1], level=r[2], state=r[3], state_vi=bulletins.STATE_VI[bulletins.State(r[3])],
                 author=r[4], audio=r[5], fallback=bool(r[6]), updated_at=r[7],
                 seconds=round(r[8] / 1000) if r[8] else None) for r in rows]


def _bulletins_page(request: Request, errors=None, values=None, status: int = 200):
    console = console_of(request)
    db = console.db
    return console.render(request, "bulletins.html", {
        "title": "Bản tin", "errors": errors or {}, "values": values or {"level": "normal"},
        "queue": _bulletin_rows(db, "WHERE b.state = 'submitted'"),
        "bulletins": _bulletin_rows(db, "WHERE b.state != 'submitted'", limit=100),
        "max_mb": console.cfg.web.max_upload_bytes // 1_048_576}, status=status)


@router.get("/bulletins")
def bulletins_page(request: Request):
    page_session(request)
    return _bulletins_page(request)


@router.post("/bulletins/new")
async def bulletin_new(request: Request):
    console = console_of(request)
    sess, form = await _form(request, WRITERS)
    values = {k: _text(form, k, bulletins.MAX_TEXT + 1) for k in ("title", "level", "text")}
    values["chime"] = bool(form.get("chime"))
    upload = form.get("audio")
    action = _text(form, "action", 20)

    def create():
        sha = None
        if upload is not None and hasattr(upload, "read") and upload.filename:
            sha = console.library().import_stream(upload.file, filename=upload.filename, source="upload").sha256
        return bulletins.create(console.db, sess.actor, values["title"], values["level"] or "normal",
                                text=values["text"] or None, media_sha256=sha, chime=values["chime"])

    try:
        bid = await run_in_threadpool(create)
    except ValidationError as exc:
        return _bulletins_page(request, errors_by_field(exc, BULLETIN_LABELS), values, 422)
    if action == "submit":  # the draft is kept whatever happens to the submission
        try:
            await run_in_threadpool(lambda: bulletins.submit(console.db, console.library(), console.tts, sess.actor,
                                                             bid))
        except ValidationError as exc:
            return _bulletin_detail(request, bid, errors_by_field(exc, BULLETIN_LABELS), 422)
        except ThanthienError as exc:  # neither gTTS nor espeak-ng could speak
            return _bulletin_detail(request, bid, {"_form": [f"Chưa gửi duyệt được: {exc}"]}, 503)
    return redirect(f"/bulletins/{bid}")


@router.post("/bulletins/preview")
async def bulletin_preview(request: Request):
    """The speech a text would become, to hear in the browser before submitting."""
    console = console_of(request)
    _sess, form = await _form(request, WRITERS)
    text = _text(form, "text", bulletins.MAX_TEXT + 1)
    try:
        speech = await run_in_threadpool(console.tts.speak, text)
    except ValidationError as exc:
        return Response("; ".join(exc.problems), status_code=422, media_type="text/plain; charset=utf-8")
    except Exception as exc:  # neither gTTS nor espeak-ng could speak: say so in the page
        return Response(f"Không tạo được giọng đọc: {exc}", status_code=503, media_type="text/plain; charset=utf-8")
    return FileResponse(speech.path, media_type="audio/wav",
                        headers={"X-TTS-Fallback": "1" if speech.fallback else "0", "Cache-Control": "no-store"})


@router.get("/audio/{sha}")
def audio(request: Request, sha: str):
    console = console_of(request)
    page_session(request)
    if not SHA_RE.fullmatch(sha):  # names are hashes: nothing can reach outside the library
        raise HTTPException(404, "Không có tệp âm thanh này")
    try:
        info = console.library().get(sha)
    except Exception:
        raise HTTPException(404, "Không có tệp âm thanh này") from None
    from ..media import CONTENT_TYPES

    return FileResponse(console.media_dir / sha, media_type=CONTENT_TYPES.get(info.format, "application/octet-stream"))


@router.get("/bulletins/{bulletin_id}")
def bulletin_page(request: Request, bulletin_id: int = Path(ge=1, le=2**62)):
    console = console_of(request)
    page_session(request)
    return _bulletin_detail(request, bulletin_id)


def _bulletin_detail(request: Request, bulletin_id: int, errors=None, status: int = 200):
    console = console_of(request)
    db = console.db
    try:
        b = bulletins.get(db, bulletin_id)
    except ValidationError:
        raise HTTPException(404, "Không có bản tin này") from None
    media = None
    if b.audio_sha256 or b.media_sha256:
        try:
            media = console.library().get(b.audio_sha256 or b.media_sha256)
        except Exception:
            media = None
    history = areas.audit_log(db, "bulletin", b.id)
    occ = db.execute("SELECT o.id, o.start_at, o.cancelled, s.targets FROM occurrences o JOIN schedules s "
                     "ON s.id = o.schedule_id WHERE o.bulletin_id = ? ORDER BY o.start_at DESC LIMIT 50",
                     [b.id]).fetchall()
    cov = reports.coverage(db, b.id) if occ else None
    groups = areas.all_groups(db)
    return console.render(request, "bulletin.html", {
        "title": f"Bản tin {b.id}", "b": b, "state_vi": bulletins.STATE_VI[b.state], "media": media,
        "history": history, "occurrences": [dict(id=r[0], start_at=r[1], cancelled=bool(r[2])) for r in occ],
        "coverage": cov, "errors": errors or {}, "groups": groups,
        "default_at": dt.datetime.fromtimestamp(now_ms() / 1000 + 120, console.zone).strftime("%Y-%m-%dT%H:%M")},
        status=status)


@router.post("/bulletins/{bulletin_id}/{step}")
async def bulletin_step(request: Request, step: str, bulletin_id: int = Path(ge=1, le=2**62)):
    console = console_of(request)
    if step not in ("submit", "approve", "reject", "cancel"):
        raise HTTPException(404, "Không có thao tác này")
    sess, form = await _form(request)
    reason = _text(form, "reason", 1000) or None

    def work():
        db = console.db
        if step == "submit":
            bulletins.submit(db, console.library(), console.tts, sess.actor, bulletin_id)
        elif step == "approve":
            bulletins.approve(db, sess.actor, bulletin_id, reason)
        elif step == "reject":
            bulletins.reject(db, sess.actor, bulletin_id, reason or "")
        else:
            bulletins.cancel(db, sess.actor, bulletin_id, reason or "")

    try:
        await run_in_threadpool(work)
    except ThanthienError as exc:
        if not isinstance(exc, ValidationError):
            return _bulletin_detail(request, bulletin_id, {"_form": [f"Chưa làm được: {exc}"]}, 503)
        errs = errors_by_field(exc, BULLETIN_LABELS)
        return _bulletin_detail(request, bulletin_id, {f"{step}_{k}" if k == "reason" else k: v
                                                       for k, v in errs.items()}, 422)
    back = _text(form, "back", 100)
    return redirect(back if back in ("/bulletins",) else f"/bulletins/{bulletin_id}")


# --- schedules ---------------------------------------------------------------------------

def _monday(text: str | None, zone) -> dt.date:
    try:
        d = dt.date.fromisoformat(text) if text else dt.datetime.now(zone).date()
    except ValueError:
        d = dt.datetime.now(zone).date()
    return d - dt.timedelta(days=d.weekday())


def _schedules_page(request: Request, errors=None, values=None, preview=None, status: int = 200,
                    group: str | None = None, week: str | None = None):
    console = console_of(request)
    db = console.db
    groups = areas.all_groups(db)
    monday = _monday(week, console.zone)
    approved = _bulletin_rows(db, "WHERE b.state IN ('approved', 'scheduled')", limit=200)
    default_at = dt.datetime.fromtimestamp(now_ms() / 1000 + 300, console.zone).strftime("%Y-%m-%dT%H:%M")
    return console.render(request, "schedules.html", {
        "title": "Lịch phát", "groups": groups, "group": group, "monday": monday,
        "days": dashboard.week(db, console.tz, group, monday),
        "prev_week": (monday - dt.timedelta(days=7)).isoformat(), "next_week": (monday + dt.timedelta(days=7)).isoformat(),
        "approved": approved, "errors": errors or {}, "preview": preview,
        "values": values or {"kind": "once", "at": default_at, "repeat": "1"},
        "devices": areas.all_devices(db), "horizon_h": console.cfg.schedule_horizon_h,
        "active": schedules.active_schedules(db, console.tz)}, status=status)


@router.get("/schedules")
def schedules_page(request: Request, group: str | None = None, week: str | None = None, bulletin: int | None = None):
    page_session(request)
    values = None
    if bulletin is not None:
        console = console_of(request)
        values = {"kind": "once", "bulletin_id": str(bulletin), "repeat": "1", "mode": "bulletin",
                  "at": dt.datetime.fromtimestamp(now_ms() / 1000 + 300, console.zone).strftime("%Y-%m-%dT%H:%M")}
    return _schedules_page(request, group=group if group and len(group) <= 64 else None, week=week, values=values)


def _schedule_in(form) -> tuple[api.ScheduleIn, dict]:
    values = {k: _text(form, k, 2000) for k in ("bulletin_id", "kind", "at", "monthday", "rrule", "count", "until",
                                                "repeat", "relay_url", "relay_minutes", "mode")}
    values["weekdays"] = [w for w in form.getlist("weekdays") if isinstance(w, str)]
    values["groups"] = [g for g in form.getlist("groups") if isinstance(g, str) and g]
    values["all"] = bool(form.get("all"))
    relay = values["mode"] == "relay"
    kind = values["kind"] if values["kind"] in ("once", "daily", "weekly", "monthly", "rrule") else "once"
    bulletin_id = _int(form, "bulletin_id", "bản tin", 1, 2**62) if not relay else None
    days = [w for w in values["weekdays"] if w in schedules.WEEKDAYS]
    data = api.ScheduleIn.model_construct(
        bulletin_id=bulletin_id, kind=kind, at=values["at"], weekdays=days,
        monthday=_int(form, "monthday", "ngày trong tháng", 1, 31) if kind == "monthly" else None,
        rrule=values["rrule"] or None if kind == "rrule" else None,
        count=_int(form, "count", "số lần lặp", 1, 1000), until=values["until"] or None,
        repeat=_int(form, "repeat", "số lần phát lại", 1, schedules.MAX_REPEAT, 1),
        all=values["all"], groups=values["groups"][:500], devices=[],
        relay_url=(values["relay_url"] or "") if relay else None,
        relay_minutes=_int(form, "relay_minutes", "thời lượng tiếp sóng", 1, 1440) if relay else None)
    return data, values


@router.post("/schedules")
async def schedule_save(request: Request):
    console = console_of(request)
    sess, form = await _form(request, (Role.OPERATOR, Role.APPROVER))
    action = _text(form, "action", 20)
    values = {}
    try:
        data, values = _schedule_in(form)
        pv = await run_in_threadpool(api.schedule_preview, console, data)
        if action != "save" or ((pv.quiet_conflicts or pv.overlaps) and not form.get("confirm")):
            # warnings are shown before anything is saved; saving over them needs the box ticked
            return _schedules_page(request, values=values, preview=pv)
        args = api.schedule_request(console, data)
        await run_in_threadpool(lambda: schedules.add_schedule(
            console.db, sess.actor, console.tz, console.horizon_ms, bulletin_id=data.bulletin_id, repeat=data.repeat,
            relay_url=data.relay_url, relay_minutes=data.relay_minutes, **args))
    except ValidationError as exc:
        return _schedules_page(request, errors=errors_by_field(exc, SCHEDULE_LABELS), values=values or None,
                               status=422)
    group = data.groups[0] if len(data.groups) == 1 else ""
    week = dt.datetime.fromtimestamp(args["dtstart"] / 1000, console.zone).date().isoformat()
    return redirect(f"/schedules?saved=1&week={week}" + (f"&group={group}" if group else ""))


@router.post("/schedules/{schedule_id}/stop")
async def schedule_stop(request: Request, schedule_id: int = Path(ge=1, le=2**62)):
    console = console_of(request)
    sess, form = await _form(request, (Role.OPERATOR, Role.APPROVER))
    reason = _text(form, "reason", 1000)
    try:
        await run_in_threadpool(lambda: schedules.stop_schedule(console.db, sess.actor, schedule_id, reason))
    except ValidationError as exc:
        return _schedules_page(request, errors={f"stop_{schedule_id}": exc.problems}, status=422)
    return redirect("/schedules?stopped=1#active")


# --- emergency ---------------------------------------------------------------------------

def _emergency_roles(console: Console):
    return (Role.APPROVER, Role.OPERATOR) if console.cfg.allow_operator_emergency else (Role.APPROVER,)


def _emergency_page(request: Request, errors=None, values=None, status: int = 200):
    console = console_of(request)
    db = console.db
    recent = db.execute("SELECT o.id, o.start_at, b.title, s.created_by FROM occurrences o JOIN schedules s ON "
                        "s.id = o.schedule_id LEFT JOIN bulletins b ON b.id = o.bulletin_id WHERE o.priority = 3 "
                        "ORDER BY o.start_at DESC LIMIT 10").fetchall()
    return console.render(request, "emergency.html", {
        "title": "Phát khẩn cấp", "groups": areas.all_groups(db), "errors": errors or {}, "values": values or {},
        "confirm_word": EMERGENCY_CONFIRM, "recent": [dict(id=r[0], start_at=r[1], title=r[2], actor=r[3])
                                                      for r in recent],
        "max_mb": console.cfg.web.max_upload_bytes // 1_048_576}, status=status)


@router.get("/emergency")
def emergency_page(request: Request):
    console = console_of(request)
    page_session(request, _emergency_roles(console))
    return _emergency_page(request)


@router.post("/emergency")
async def emergency_send(request: Request):
    console = console_of(request)
    sess, form = await _form(request, _emergency_roles(console))
    values = {k: _text(form, k, bulletins.MAX_TEXT + 1) for k in ("title", "text", "reason", "confirm")}
    values["groups"] = [g for g in form.getlist("groups") if isinstance(g, str) and g][:500]
    values["all"] = bool(form.get("all"))
    upload = form.get("audio")
    errors: dict[str, list[str]] = {}
    if not values["all"] and not values["groups"]:
        errors["targets"] = ["Nơi phát: chọn tất cả loa hoặc ít nhất một tổ"]
    if not values["reason"]:
        errors["reason"] = ["Lý do: bắt buộc, ghi rõ vì sao phát khẩn cấp"]
    if values["confirm"] != EMERGENCY_CONFIRM:
        errors["confirm"] = [f"Xác nhận: gõ đúng chữ {EMERGENCY_CONFIRM}"]
    has_audio = upload is not None and hasattr(upload, "read") and bool(upload.filename)
    if not values["text"] and not has_audio:
        errors["text"] = ["Nội dung: nhập văn bản hoặc chọn tệp âm thanh"]
    if not console.online:
        errors["_form"] = ["Trạm chưa kết nối MQTT broker: không phát được ngay. Kiểm tra broker rồi thử lại."]
    if errors:
        return _emergency_page(request, errors, values, 422)
    targets = schedules.Targets(values["all"], tuple(dict.fromkeys(values["groups"])), ())

    def work():
        sha = None
        if has_audio:
            sha = console.library().import_stream(upload.file, filename=upload.filename, source="upload").sha256
        bid = bulletins.create(console.db, sess.actor, values["title"] or "Thông báo khẩn cấp", "emergency",
                               text=values["text"] or None, media_sha256=sha)
        return console.svc.send_emergency(sess.actor, bid, targets, values["reason"], db=console.db)

    try:
        oid = await run_in_threadpool(work)
    except ValidationError as exc:
        return _emergency_page(request, errors_by_field(exc, {**BULLETIN_LABELS, "nơi phát": "targets"}), values, 422)
    except ThanthienError as exc:  # speech could not be made, or the broker did not take it
        return _emergency_page(request, {"_form": [f"Chưa phát được: {exc}"]}, values, 503)
    return redirect(f"/emergency/{oid}")


@router.get("/emergency/{occurrence_id}")
def emergency_live(request: Request, occurrence_id: str):
    console = console_of(request)
    page_session(request)
    found = dashboard.emergency_progress(console.db, occurrence_id[:128])
    if found is None:
        raise HTTPException(404, "Không có lượt phát khẩn cấp này")
    return console.render(request, "emergency_live.html", {"title": "Phát khẩn cấp — theo dõi", "e": found})


# --- devices and groups ------------------------------------------------------------------

def _devices_page(request: Request, errors=None, values=None, status: int = 200):
    console = console_of(request)
    db = console.db
    rows = dashboard.nodes(db, console.cfg.offline_alert_minutes)
    groups = db.execute("SELECT code, name, lat, lon, quiet_start, quiet_end, (SELECT COUNT(*) FROM device_groups dg "
                        "WHERE dg.group_code = g.code) FROM groups g ORDER BY code").fetchall()
    return console.render(request, "devices.html", {
        "title": "Loa và tổ dân phố", "nodes": rows, "errors": errors or {}, "values": values or {},
        "groups": [dict(code=r[0], name=r[1], lat=r[2], lon=r[3], quiet_start=r[4], quiet_end=r[5], devices=r[6])
                   for r in groups]}, status=status)


@router.get("/devices")
def devices_page(request: Request, group: str | None = None):
    console = console_of(request)
    page_session(request)
    values = None
    if group:  # edit a group: the form starts from what is stored
        row = console.db.execute("SELECT code, name, lat, lon, quiet_start, quiet_end FROM groups WHERE code = ?",
                                 [group[:64]]).fetchone()
        if row:
            values = {k: ("" if v is None else str(v)) for k, v in
                      zip(("code", "name", "lat", "lon", "quiet_start", "quiet_end"), row)}
            values["editing"] = True
    return _devices_page(request, values=values)


@router.post("/groups")
async def group_save(request: Request):
    console = console_of(request)
    sess, form = await _form(request, TECH)
    values = {k: _text(form, k, 300) for k in ("code", "name", "lat", "lon", "quiet_start", "quiet_end")}
    try:
        lat, lon = _float(form, "lat", "gps"), _float(form, "lon", "gps")
        await run_in_threadpool(lambda: areas.save_group(
            console.db, sess.actor, values["code"], values["name"], lat=lat, lon=lon,
            quiet_start=values["quiet_start"] or None, quiet_end=values["quiet_end"] or None))
    except ValidationError as exc:
        return _devices_page(request, {f"group_{k}": v for k, v in errors_by_field(exc, GROUP_LABELS).items()},
                             values, 422)
    return redirect("/devices#to-" + values["code"])


def _device_page(request: Request, device_id: str, errors=None, values=None, status: int = 200, cmd=None):
    console = console_of(request)
    db = console.db
    row = db.execute("SELECT id, name, location, lat, lon, volume, max_volume, emergency_volume FROM devices "
                     "WHERE id = ?", [device_id]).fetchone()
    if row is None and values is None:
        raise HTTPException(404, "Không có loa này")
    dev = dict(zip(("id", "name", "location", "lat", "lon", "volume", "max_volume", "emergency_volume"), row)) \
        if row else {}
    node = next((n for n in dashboard.nodes(db, console.cfg.offline_alert_minutes) if n["id"] == device_id), None)
    history = dashboard.telemetry_history(db, device_id, now_ms() - 7 * 86_400_000)
    commands = db.execute("SELECT cmd_id, type, actor, sent_at FROM commands WHERE target = ? ORDER BY sent_at DESC "
                          "LIMIT 10", [f"devices/{device_id}"]).fetchall()
    cmds = [dict(cmd_id=c[0], type=c[1], actor=c[2], sent_at=c[3], acks=dashboard.command_status(db, c[0]))
            for c in commands]
    return console.render(request, "device.html", {
        "title": f"Loa {device_id}", "dev": dev, "node": node, "history": history[-288:], "commands": cmds,
        "groups": areas.all_groups(db), "dev_groups": areas.device_groups(db, device_id),
        "errors": errors or {}, "values": values or dev, "cmd": cmd}, status=status)


@router.get("/devices/{device_id}")
def device_page(request: Request, device_id: str):
    page_session(request)
    return _device_page(request, device_id[:64])


@router.post("/devices")
async def device_save(request: Request):
    console = console_of(request)
    sess, form = await _form(request, TECH)
    values = {k: _text(form, k, 300) for k in ("id", "name", "location", "lat", "lon", "volume", "max_volume",
                                               "emergency_volume")}
    groups = [g for g in form.getlist("groups") if isinstance(g, str) and g][:32]
    try:
        if not values["name"]:
            raise FieldError("name", "Tên loa: bắt buộc")
        kwargs = dict(location=values["location"] or None, lat=_float(form, "lat", "gps"), lon=_float(form, "lon", "gps"),
                      volume=_int(form, "volume", "âm lượng", 0, 100, 70),
                      max_volume=_int(form, "max_volume", "âm lượng tối đa", 0, 100, 100),
                      emergency_volume=_int(form, "emergency_volume", "âm lượng khẩn cấp", 0, 100, 100))
        await run_in_threadpool(lambda: areas.save_device(console.db, sess.actor, values["id"], values["name"],
                                                          groups, **kwargs))
    except ValidationError as exc:
        errs = errors_by_field(exc, DEVICE_LABELS)
        if _text(form, "from", 20) == "device":
            return _device_page(request, values["id"][:64], errs, {**values, "groups": groups}, 422)
        return _devices_page(request, {f"device_{k}": v for k, v in errs.items()}, values, 422)
    return redirect(f"/devices/{values['id']}")


@router.post("/devices/{device_id}/command")
async def device_command(request: Request, device_id: str):
    console = console_of(request)
    sess, form = await _form(request, TECH)
    kind = _text(form, "command", 20)
    try:
        if kind == "test_tone":
            seconds = _int(form, "seconds", "thời lượng", 1, 60, 3)
            mt, body = p.MessageType.TEST_TONE, {"duration_ms": seconds * 1000, "frequency_hz": 1000}
        elif kind == "identify":
            mt, body = p.MessageType.IDENTIFY, {"duration_ms": 10_000}
        elif kind == "restart":
            mt, body = p.MessageType.RESTART, {"reason": "kỹ thuật viên khởi động lại từ bảng điều khiển"}
        elif kind == "volume":
            mt, body = p.MessageType.VOLUME, {"volume": _int(form, "volume", "âm lượng", 0, 100, 70)}
        else:
            raise FieldError("command", "Lệnh: chọn phát thử, nhận diện, khởi động lại hoặc âm lượng")
        if console.svc is None:
            raise FieldError("command", "Trạm chưa chạy dịch vụ MQTT: không gửi được lệnh tới loa")
        cmd_id = await run_in_threadpool(lambda: console.svc.send_command(sess.actor, device_id[:64], mt, body,
                                                                            console.db))
    except ValidationError as exc:
        return _device_page(request, device_id[:64], {"command": exc.problems}, status=422)
    return redirect(f"/devices/{device_id[:64]}?cmd={cmd_id}")


# --- reports -----------------------------------------------------------------------------

def _period_args(console: Console, start: str | None, end: str | None) -> tuple[int, int, str, str]:
    today = dt.datetime.now(console.zone).date()
    s_text = start or (today - dt.timedelta(days=30)).isoformat()
    e_text = end or today.isoformat()
    s = console.parse_date(s_text, "from", "từ ngày")
    e = console.parse_date(e_text, "to", "đến ngày") + 86_400_000
    if e <= s:
        raise FieldError("to", "đến ngày: phải sau từ ngày")
    return s, e, s_text, e_text


@router.get("/reports")
def reports_page(request: Request, start: str | None = None, end: str | None = None):
    console = console_of(request)
    page_session(request)
    params = request.query_params
    start, end = params.get("from"), params.get("to")
    errors = {}
    try:
        s, e, s_text, e_text = _period_args(console, start, end)
    except ValidationError as exc:
        errors = errors_by_field(exc, {})
        s, e, s_text, e_text = _period_args(console, None, None)
    db = console.db
    summary = reports.period_summary_cached(db, s, e, dashboard.utc_offset_ms(console.tz, s))
    sat = kiosk_feed.satisfaction(db, s, e, console.tz)
    titles = {r[0]: r[1] for r in db.execute("SELECT id, title FROM bulletins")}
    recent = [dict(o.__dict__, title=titles.get(o.bulletin_id, "Tiếp sóng" if o.bulletin_id is None else "?"))
              for o in summary["latest"][:50]]
    month = dt.datetime.now(console.zone).strftime("%Y-%m")
    chart = {"days": dashboard.plays_per_day(summary), "counts": summary["counts"],
             "satisfaction": {"labels": [f.label for f in sat["factors"]], "pct": [f.pct for f in sat["factors"]],
                              "target": sat["target_pct"]}}
    return console.render(request, "reports.html", {
        "title": "Báo cáo", "from": s_text, "to": e_text, "errors": errors, "devices": summary["devices"],
        "recent": recent, "counts": summary["counts"], "sat": sat, "chart": chart, "month": month,
        "feedback": kiosk_feed.recent_feedback(db, s, e, 20)})


@router.get("/reports/{name}.csv")
def report_csv(request: Request, name: str):
    console = console_of(request)
    page_session(request)
    params = request.query_params
    try:
        s, e, s_text, e_text = _period_args(console, params.get("from"), params.get("to"))
    except ValidationError as exc:
        raise HTTPException(422, "; ".join(exc.problems)) from None
    db = console.db
    if name == "outcomes":
        text = reports.to_csv(reports.outcomes(db, s, e))
    elif name == "devices":
        text = reports.to_csv(reports.device_summary(db, s, e))
    elif name == "satisfaction":
        sat = kiosk_feed.satisfaction(db, s, e, console.tz)
        rows = [{"dimension": dim, **x.as_dict()} for dim in ("factors", "officers", "fields", "months")
                for x in sat[dim]]
        text = reports.to_csv([{k: v for k, v in r.items()} for r in rows])
    else:
        raise HTTPException(404, "Không có báo cáo này")
    return Response("\ufeff" + text, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}-{s_text}-{e_text}.csv"'})


@router.get("/reports/month")
def report_month(request: Request, month: str | None = None):
    console = console_of(request)
    page_session(request)
    month = month or dt.datetime.now(console.zone).strftime("%Y-%m")
    try:
        s, e = dashboard.month_bounds(month, console.tz)
    except ValueError:
        raise HTTPException(422, "Tháng: nhập dạng 2026-11") from None
    data = dashboard.criterion8(console.db, s, e, console.tz)
    sat = kiosk_feed.satisfaction(console.db, s, e, console.tz)
    return console.render(request, "month.html", {"title": f"Minh chứng tiêu chí 8 — tháng {month[5:]}/{month[:4]}",
                                                  "month": month, "d": data, "sat": sat,
                                                  "generated": now_ms()})


# --- audit and account -------------------------------------------------------------------

@router.get("/audit")
def audit_page(request: Request, before: int | None = Query(None, ge=0, le=2**62), actor: str | None = None, type: str | None = None):
    console = console_of(request)
    page_session(request, (Role.APPROVER, Role.TECHNICIAN, Role.OPERATOR, Role.VIEWER))
    actor = actor[:64] if actor else None
    otype = type[:32] if type else None
    entries = api.audit_page(console.db, 100, before if before and before > 0 else None, actor, otype)
    return console.render(request, "audit.html", {"title": "Nhật ký thao tác", "entries": entries, "actor": actor,
                                                  "type": otype, "next_before": entries[-1]["id"]
                                                  if len(entries) == 100 else None})


@router.get("/account")
def account_page(request: Request):
    console = console_of(request)
    page_session(request)
    return console.render(request, "account.html", {"title": "Tài khoản", "errors": {}, "done": False})


@router.post("/account")
async def account_save(request: Request):
    console = console_of(request)
    sess, form = await _form(request)
    current = form.get("current") if isinstance(form.get("current"), str) else ""
    new = form.get("new") if isinstance(form.get("new"), str) else ""
    again = form.get("again") if isinstance(form.get("again"), str) else ""
    errors: dict[str, list[str]] = {}
    if await run_in_threadpool(
            lambda: auth.authenticate(console.db, sess.actor.username, current[:auth.MAX_PASSWORD])) is None:
        errors["current"] = ["Mật khẩu hiện tại: không đúng"]
    elif new != again:
        errors["again"] = ["Nhập lại: không khớp với mật khẩu mới"]
    else:
        try:
            await run_in_threadpool(lambda: auth.set_password(console.db, sess.actor, sess.actor.username, new))
        except ValidationError as exc:
            errors["new"] = exc.problems
    if errors:
        return console.render(request, "account.html", {"title": "Tài khoản", "errors": errors, "done": False}, 422)
    resp = redirect("/login")
    resp.delete_cookie(SESSION_COOKIE)
    return resp


# --- users (admin) -----------------------------------------------------------------------

USER_LABELS = {"tên đăng nhập": "username", "mật khẩu": "password", "người dùng": "username",
               "tên hiển thị": "display_name", "vai trò": "role"}


def _users_page(request: Request, errors=None, values=None, status: int = 200):
    console = console_of(request)
    rows = console.db.execute("SELECT u.username, u.role, u.display_name, u.password_hash IS NOT NULL, u.created_at, "
                              "(SELECT MAX(at) FROM audit a WHERE a.actor = u.username AND a.action = 'login') "
                              "FROM users u ORDER BY u.username").fetchall()
    users = [dict(username=r[0], role=r[1], display_name=r[2], has_password=bool(r[3]), created_at=r[4],
                  last_login=r[5]) for r in rows]
    return console.render(request, "users.html", {"title": "Người dùng", "users": users, "errors": errors or {},
                                                  "values": values or {"role": "operator"}}, status=status)


@router.get("/users")
def users_page(request: Request):
    page_session(request, (Role.ADMIN,))
    return _users_page(request)


@router.post("/users")
async def user_add(request: Request):
    console = console_of(request)
    sess, form = await _form(request, (Role.ADMIN,))
    values = {k: _text(form, k, 200) for k in ("username", "role", "display_name")}
    password = form.get("password") if isinstance(form.get("password"), str) else ""

    def work():
        if values["role"] not in {r.value for r in Role}:
            raise FieldError("role", "Vai trò: chọn một vai trò trong danh sách")
        if not values["display_name"]:
            raise FieldError("display_name", "Tên hiển thị: bắt buộc")
        auth.check_new_password(password)
        if console.db.execute("SELECT 1 FROM users WHERE username = ?", [values["username"]]).fetchone():
            raise FieldError("username", "Tên đăng nhập: đã có tài khoản này")
        areas.add_user(console.db, values["username"], values["role"], values["display_name"])
        from ..db import transaction

        with transaction(console.db):
            areas.audit(console.db, sess.actor, "user.add", "user", values["username"], {"role": values["role"]})
        auth.set_password(console.db, sess.actor, values["username"], password)

    try:
        await run_in_threadpool(work)
    except ValidationError as exc:
        return _users_page(request, errors_by_field(exc, USER_LABELS), values, 422)
    return redirect("/users")


@router.post("/users/{username}/password")
async def user_password(request: Request, username: str):
    console = console_of(request)
    sess, form = await _form(request, (Role.ADMIN,))
    password = form.get("password") if isinstance(form.get("password"), str) else ""
    try:
        await run_in_threadpool(lambda: auth.set_password(console.db, sess.actor, username[:64], password))
    except ValidationError as exc:
        return _users_page(request, {f"pw_{username[:64]}": exc.problems}, status=422)
    return redirect("/users")

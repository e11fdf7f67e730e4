"""`/api/v1`: the station's JSON API for scripts (bearer token of a user, see
`thanthien station api-token add USER`) and for the console's own live views (session
cookie; state-changing calls carry X-CSRF-Token)."""

from __future__ import annotations

from typing import Literal

import json

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from devices.errors import ThanthienError, ValidationError

from .. import areas, bulletins, dashboard, kiosk_feed, reports, schedules
from ..db import now_ms
from .core import ApiCaller, Console, api_caller, api_error, validation_response

router = APIRouter(prefix="/api/v1", tags=["station"])
MAX_ID = 2**62
ERR = {"type": "object", "properties": {"error": {"type": "string"}, "field": {"type": "string"},
                                        "message": {"type": "string"}, "message_vi": {"type": "string"}}}
COMMON = {401: {"description": "missing or unknown token", "content": {"application/json": {"schema": ERR}}},
          422: {"description": "invalid field", "content": {"application/json": {"schema": ERR}}}}


class Unauthorized(Exception):
    pass


def _caller(request: Request) -> ApiCaller:
    caller = api_caller(request)
    if caller is None or caller.actor is None:
        raise Unauthorized()
    return caller


def _guarded(fn):
    """Run a handler body: 401 without a user, 422 with the field for invalid input."""
    import functools

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Unauthorized:
            return api_error(401, "authorization", "missing or unknown bearer token (or CSRF token)",
                             "Chưa đăng nhập, mã truy cập hoặc mã CSRF không hợp lệ", "unauthorized")
        except ValidationError as exc:
            return validation_response(exc)
        except ThanthienError as exc:  # speech could not be made, storage trouble: say so, never 500
            return api_error(503, "service", str(exc)[:300], f"Chưa làm được: {str(exc)[:300]}", "unavailable")
    return run


@router.get("/health", summary="Liveness of the station (no authentication)")
def health(request: Request):
    console: Console = request.app.state.console
    return {"ok": True, "site": console.cfg.site, "mqtt_connected": console.online, "time_ms": now_ms()}


@router.get("/dashboard", summary="Every node's state, counts and alerts", responses=COMMON)
@_guarded
def get_dashboard(request: Request, group: str | None = Query(None, max_length=64), problems: bool = False):
    console: Console = request.app.state.console
    _caller(request)
    rows = dashboard.nodes(console.db, console.cfg.offline_alert_minutes)
    body = {"summary": dashboard.summary(rows), "nodes": dashboard.filtered(rows, group, problems),
            "mqtt_connected": console.online, "time_ms": now_ms()}
    # plain json.dumps: thousands of rows of str/int/bool need no jsonable_encoder pass
    return Response(json.dumps(body, ensure_ascii=False, separators=(",", ":")), media_type="application/json")


@router.get("/bulletins", summary="Bulletins, newest first", responses=COMMON)
@_guarded
def list_bulletins(request: Request, state: Literal["draft", "submitted", "approved", "scheduled", "done",
                                                    "rejected", "cancelled"] | None = None,
                   limit: int = Query(100, ge=1, le=1000)):
    console: Console = request.app.state.console
    _caller(request)
    sql = ("SELECT id, title, level, state, author, audio_sha256, audio_fallback, created_at, updated_at "
           "FROM bulletins")
    args: list = []
    if state:
        sql += " WHERE state = ?"
        args.append(state)
    rows = console.db.execute(sql + " ORDER BY id DESC LIMIT ?", args + [limit]).fetchall()
    return {"bulletins": [dict(id=r[0], title=r[1], level=r[2], state=r[3], author=r[4], audio_sha256=r[5],
                               audio_fallback=bool(r[6]), created_at=r[7], updated_at=r[8]) for r in rows]}


class BulletinIn(BaseModel):
    title: str = Field(min_length=1, max_length=bulletins.MAX_TITLE)
    level: Literal["normal", "priority", "emergency"] = "normal"
    text: str | None = Field(None, max_length=bulletins.MAX_TEXT)
    media_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    chime: bool = False


@router.post("/bulletins", summary="Write a bulletin (draft)", status_code=201, responses=COMMON)
@_guarded
def create_bulletin(request: Request, body: BulletinIn):
    console: Console = request.app.state.console
    caller = _caller(request)
    bid = bulletins.create(console.db, caller.actor, body.title, body.level, text=body.text,
                           media_sha256=body.media_sha256, chime=body.chime)
    return {"id": bid, "state": "draft"}


class ReasonIn(BaseModel):
    reason: str | None = Field(None, max_length=1000)


def _bulletin_out(b: bulletins.Bulletin) -> dict:
    return {"id": b.id, "title": b.title, "level": b.level.value, "state": b.state.value,
            "audio_sha256": b.audio_sha256, "audio_fallback": b.audio_fallback}


@router.post("/bulletins/{bulletin_id}/{step}", summary="Move a bulletin: submit, approve, reject or cancel",
             responses=COMMON)
@_guarded
def bulletin_step(request: Request, step: Literal["submit", "approve", "reject", "cancel"],
                  bulletin_id: int = Path(ge=1, le=MAX_ID), body: ReasonIn | None = None):
    console: Console = request.app.state.console
    caller = _caller(request)
    reason = body.reason if body else None
    db = console.db
    if step == "submit":
        b = bulletins.submit(db, console.library(), console.tts, caller.actor, bulletin_id)
    elif step == "approve":
        b = bulletins.approve(db, caller.actor, bulletin_id, reason)
    elif step == "reject":
        b = bulletins.reject(db, caller.actor, bulletin_id, reason or "")
    else:
        b = bulletins.cancel(db, caller.actor, bulletin_id, reason or "")
    return _bulletin_out(b)


class ScheduleIn(BaseModel):
    bulletin_id: int | None = Field(None, ge=1, le=2**62)
    kind: Literal["once", "daily", "weekly", "monthly", "rrule"] = "once"
    at: str = Field(description="first (or only) time in the ward's zone, 'YYYY-MM-DDTHH:MM[:SS]'", max_length=40)
    weekdays: list[Literal["mo", "tu", "we", "th", "fr", "sa", "su"]] = Field(default_factory=list, max_length=7)
    monthday: int | None = Field(None, ge=1, le=31)
    rrule: str | None = Field(None, max_length=500)
    count: int | None = Field(None, ge=1, le=1000)
    until: str | None = Field(None, description="last day 'YYYY-MM-DD'", max_length=20)
    repeat: int = Field(1, ge=1, le=schedules.MAX_REPEAT)
    all: bool = False
    groups: list[str] = Field(default_factory=list, max_length=500)
    devices: list[str] = Field(default_factory=list, max_length=5000)
    relay_url: str | None = Field(None, max_length=2000)
    relay_minutes: int | None = Field(None, ge=1, le=1440)


def schedule_request(console: Console, data: ScheduleIn) -> dict:
    """Translate a schedule request into the keyword arguments of ``schedules``."""
    dtstart = console.parse_local(data.at, "at", "thời gian")
    until = console.parse_date(data.until, "until", "ngày kết thúc") + 86_399_999 if data.until else None
    rule = schedules.build_rrule(data.kind, weekdays=data.weekdays, monthday=data.monthday, rrule=data.rrule,
                                 count=data.count)
    if rule is not None:
        schedules.expand(rule, dtstart, console.tz, dtstart, dtstart + 1)  # a bad RRULE fails here, by name
    targets = schedules.Targets(data.all, tuple(dict.fromkeys(data.groups)), tuple(dict.fromkeys(data.devices)))
    return {"rule": rule, "dtstart": dtstart, "valid_until": until, "targets": targets}


def schedule_preview(console: Console, data: ScheduleIn) -> schedules.Preview:
    args = schedule_request(console, data)
    db = console.db
    if data.relay_url:
        b, prio, dur = None, 0, (data.relay_minutes or 1) * 60_000
    else:
        if data.bulletin_id is None:
            raise ValidationError(["bản tin: chọn bản tin cần phát"])
        b = bulletins.get(db, data.bulletin_id)
        prio = b.level.priority
        row = db.execute("SELECT duration_ms FROM media WHERE sha256 = ?", [b.audio_sha256]).fetchone()
        dur = (row[0] if row else 60_000) * data.repeat
    return schedules.preview(db, console.tz, console.horizon_ms, bulletin=b, rule=args["rule"],
                             dtstart=args["dtstart"], targets=args["targets"], priority=prio, duration_ms=dur,
                             valid_until=args["valid_until"])


@router.post("/schedules/preview", summary="What saving would do: occurrences, quiet-hour and overlap warnings",
             responses=COMMON)
@_guarded
def preview_schedule(request: Request, body: ScheduleIn):
    console: Console = request.app.state.console
    _caller(request)
    pv = schedule_preview(console, body)
    return {"occurrences": pv.starts[:100], "quiet_conflicts": pv.quiet_conflicts, "overlaps": pv.overlaps}


@router.post("/schedules", summary="Save a schedule (refused in quiet hours unless emergency)", status_code=201,
             responses=COMMON)
@_guarded
def save_schedule(request: Request, body: ScheduleIn):
    console: Console = request.app.state.console
    caller = _caller(request)
    args = schedule_request(console, body)
    sid = schedules.add_schedule(console.db, caller.actor, console.tz, console.horizon_ms,
                                 bulletin_id=None if body.relay_url else body.bulletin_id, repeat=body.repeat,
                                 relay_url=body.relay_url, relay_minutes=body.relay_minutes, **args)
    return {"id": sid}


@router.get("/emergency/{occurrence_id}", summary="Live progress of an emergency: acks and plays per node",
            responses={**COMMON, 404: {"description": "no such emergency"}})
@_guarded
def emergency_status(request: Request, occurrence_id: str = Path(max_length=128)):
    console: Console = request.app.state.console
    _caller(request)
    found = dashboard.emergency_progress(console.db, occurrence_id)
    if found is None:
        return api_error(404, "occurrence_id", "no such broadcast", "Không có lượt phát này", "not_found")
    return found


@router.get("/commands/{cmd_id}", summary="Acks received for a technician command", responses=COMMON)
@_guarded
def command_status(request: Request, cmd_id: str = Path(max_length=64)):
    console: Console = request.app.state.console
    _caller(request)
    return {"cmd_id": cmd_id[:64], "acks": dashboard.command_status(console.db, cmd_id[:64])}


def _period(console: Console, start: str | None, end: str | None) -> tuple[int, int]:
    s = console.parse_date(start, "from", "từ ngày") if start else now_ms() - 30 * 86_400_000
    e = console.parse_date(end, "to", "đến ngày") + 86_400_000 if end else now_ms() + 86_400_000
    if e <= s:
        raise ValidationError(["đến ngày: phải sau từ ngày"])
    return s, e


@router.get("/reports/devices", summary="Proof of play per node over a period", responses=COMMON)
@_guarded
def report_devices(request: Request, start: str | None = Query(None, alias="from", max_length=20),
                   end: str | None = Query(None, alias="to", max_length=20),
                   group: str | None = Query(None, max_length=64)):
    console: Console = request.app.state.console
    _caller(request)
    s, e = _period(console, start, end)
    if group:
        return {"devices": [r.__dict__ for r in reports.device_summary(console.db, s, e, group=group)]}
    summary = reports.period_summary_cached(console.db, s, e, dashboard.utc_offset_ms(console.tz, s))
    return {"devices": [r.__dict__ for r in summary["devices"]]}


@router.get("/reports/satisfaction", summary="Kiosk satisfaction (share of level 4–5) vs the 85 % target",
            responses=COMMON)
@_guarded
def report_satisfaction(request: Request, start: str | None = Query(None, alias="from", max_length=20),
                        end: str | None = Query(None, alias="to", max_length=20)):
    console: Console = request.app.state.console
    _caller(request)
    s, e = _period(console, start, end)
    sat = kiosk_feed.satisfaction(console.db, s, e, console.tz)
    return {"target_pct": sat["target_pct"], "feedback": sat["feedback"], "overall": sat["overall"].as_dict(),
            **{k: [x.as_dict() for x in sat[k]] for k in ("factors", "officers", "fields", "months")}}


@router.get("/reports/criterion8", summary="Criterion-8 evidence of one month", responses=COMMON)
@_guarded
def report_criterion8(request: Request, month: str = Query(pattern=r"^\d{4}-\d{2}$")):
    console: Console = request.app.state.console
    _caller(request)
    try:
        s, e = dashboard.month_bounds(month, console.tz)
    except ValueError:
        raise ValidationError(["tháng: nhập dạng 2026-11"]) from None
    return dashboard.criterion8(console.db, s, e, console.tz)


@router.get("/audit", summary="The audit log, newest first", responses=COMMON)
@_guarded
def get_audit(request: Request, limit: int = Query(100, ge=1, le=1000), before: int | None = Query(None, ge=0, le=2**62),
              actor: str | None = Query(None, max_length=64)):
    console: Console = request.app.state.console
    _caller(request)
    return {"entries": audit_page(console.db, limit, before, actor)}


def audit_page(db, limit: int, before: int | None = None, actor: str | None = None,
               object_type: str | None = None) -> list[dict]:
    import json

    sql, args = "SELECT id, at, actor, action, object_type, object_id, detail FROM audit WHERE 1=1", []
    if before:
        sql += " AND id < ?"
        args.append(before)
    if actor:
        sql += " AND actor = ?"
        args.append(actor)
    if object_type:
        sql += " AND object_type = ?"
        args.append(object_type)
    rows = db.execute(sql + " ORDER BY id DESC LIMIT ?", args + [limit]).fetchall()
    out = []
    for r in rows:
        try:
            detail = json.loads(r[6]) if r[6] else None
        except ValueError:
            detail = r[6]
        out.append({"id": r[0], "at": r[1], "actor": r[2], "action": r[3], "object_type": r[4], "object_id": r[5],
                    "detail": detail})
    return out


@router.get("/groups", summary="Residential groups and their nodes", responses=COMMON)
@_guarded
def list_groups(request: Request):
    console: Console = request.app.state.console
    _caller(request)
    return {"groups": [{**g, "devices": areas.group_members(console.db, g["code"])}
                       for g in areas.all_groups(console.db)]}

"""Schedules: when a bulletin (or a relay window) plays, and where.

Recurrence is RFC 5545 RRULE (python-dateutil) in the ward's time zone; one-off, daily,
weekly and monthly are shorthands for it. Targets are ``all``, groups or devices. A
normal item that would play in a group's quiet hours is refused when it is saved;
emergency never is. Occurrences are expanded ahead (the dispatcher's horizon) and get
stable ids, so re-expanding never creates duplicates.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import sqlite_utils

from devices.errors import ValidationError

from .areas import Actor, Role, all_devices, audit, group_members
from .bulletins import Bulletin, Level, State, get as get_bulletin, mark_scheduled
from .db import now_ms, transaction

MAX_REPEAT = 20
WEEKDAYS = {"mo": "MO", "tu": "TU", "we": "WE", "th": "TH", "fr": "FR", "sa": "SA", "su": "SU"}


@dataclass(frozen=True)
class Targets:
    all: bool = False
    groups: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps({"all": self.all, "groups": list(self.groups), "devices": list(self.devices)})

    @classmethod
    def from_json(cls, text: str) -> "Targets":
        d = json.loads(text)
        return cls(bool(d.get("all")), tuple(d.get("groups", [])), tuple(d.get("devices", [])))


def build_rrule(kind: str, *, weekdays: list[str] | None = None, monthday: int | None = None,
                rrule: str | None = None, count: int | None = None) -> str | None:
    """RRULE text for the simple kinds; None for one-off."""
    if kind == "once":
        return None
    if kind == "daily":
        rule = "FREQ=DAILY"
    elif kind == "weekly":
        days = [WEEKDAYS.get(d.lower()[:2]) for d in (weekdays or [])]
        if not days or None in days:
            raise ValidationError(["ngày trong tuần: chọn ít nhất một ngày (mo, tu, we, th, fr, sa, su)"])
        rule = "FREQ=WEEKLY;BYDAY=" + ",".join(days)
    elif kind == "monthly":
        if monthday is None or not 1 <= monthday <= 31:
            raise ValidationError(["ngày trong tháng: từ 1 đến 31"])
        rule = f"FREQ=MONTHLY;BYMONTHDAY={monthday}"
    elif kind == "rrule":
        if not rrule:
            raise ValidationError(["RRULE: nhập quy tắc lặp, ví dụ FREQ=WEEKLY;BYDAY=MO,WE"])
        rule = rrule.removeprefix("RRULE:")
    else:
        raise ValidationError(["kiểu lịch: chọn once, daily, weekly, monthly hoặc rrule"])
    if count:
        rule += f";COUNT={int(count)}"
    return rule


def expand(rule: str | None, dtstart_ms: int, tz: str, start_ms: int, end_ms: int,
           valid_until_ms: int | None = None) -> list[int]:
    """Occurrence start times (ms) of a rule within [start, end)."""
    if rule is None:
        return [dtstart_ms] if start_ms <= dtstart_ms < end_ms else []
    from dateutil.rrule import rrulestr

    zone = ZoneInfo(tz)
    start_local = dt.datetime.fromtimestamp(dtstart_ms / 1000, zone).replace(tzinfo=None)
    try:
        rr = rrulestr(rule, dtstart=start_local)
    except (ValueError, TypeError) as exc:
        raise ValidationError([f"RRULE: không hợp lệ ({exc})"]) from None
    lo = dt.datetime.fromtimestamp(start_ms / 1000, zone).replace(tzinfo=None)
    hi = dt.datetime.fromtimestamp(end_ms / 1000, zone).replace(tzinfo=None)
    out = []
    for local in rr.between(lo - dt.timedelta(seconds=1), hi, inc=True):
        ms = int(local.replace(tzinfo=zone).timestamp() * 1000)
        if start_ms <= ms < end_ms and (valid_until_ms is None or ms <= valid_until_ms):
            out.append(ms)
        if len(out) > 5000:
            break
    return out


def in_quiet_hours(ms: int, tz: str, start: str | None, end: str | None) -> bool:
    if not start or not end:
        return False
    hhmm = dt.datetime.fromtimestamp(ms / 1000, ZoneInfo(tz)).strftime("%H:%M")
    return (start <= hhmm < end) if start <= end else (hhmm >= start or hhmm < end)


def target_devices(db: sqlite_utils.Database, targets: Targets) -> list[str]:
    if targets.all:
        return all_devices(db)
    out = set(targets.devices)
    for g in targets.groups:
        out.update(group_members(db, g))
    return sorted(out)


def _check_targets(db, targets: Targets) -> None:
    if not (targets.all or targets.groups or targets.devices):
        raise ValidationError(["nơi phát: chọn tất cả, hoặc ít nhất một tổ hay một loa"])
    for g in targets.groups:
        if db.execute("SELECT 1 FROM groups WHERE code = ?", [g]).fetchone() is None:
            raise ValidationError([f"nơi phát: không có tổ {g!r}"])
    for d in targets.devices:
        if db.execute("SELECT 1 FROM devices WHERE id = ?", [d]).fetchone() is None:
            raise ValidationError([f"nơi phát: không có loa {d!r}"])


def quiet_conflicts(db, targets: Targets, starts: list[int], tz: str) -> list[str]:
    """Human-readable list of (group, time) pairs that fall in quiet hours."""
    groups = [r for r in db.execute("SELECT code, name, quiet_start, quiet_end FROM groups").fetchall()]
    if not targets.all:
        wanted = set(targets.groups)
        for d in targets.devices:
            wanted.update(r[0] for r in db.execute("SELECT group_code FROM device_groups WHERE device_id = ?", [d]))
        groups = [g for g in groups if g[0] in wanted]
    out = []
    for code, name, qs, qe in groups:
        for ms in starts:
            if in_quiet_hours(ms, tz, qs, qe):
                when = dt.datetime.fromtimestamp(ms / 1000, ZoneInfo(tz)).strftime("%d/%m %H:%M")
                out.append(f"{name} ({code}) lúc {when} nằm trong giờ yên tĩnh {qs}–{qe}")
    return out


@dataclass(frozen=True)
class Preview:
    starts: list[int]
    quiet_conflicts: list[str]
    overlaps: list[str]


def preview(db, tz: str, horizon_ms: int, *, bulletin: Bulletin | None, rule: str | None, dtstart: int,
            targets: Targets, priority: int, duration_ms: int, valid_until: int | None = None) -> Preview:
    """What saving would do: the first occurrences, quiet-hour conflicts, and overlaps
    with what is already scheduled (who pre-empts whom, who waits)."""
    starts = expand(rule, dtstart, tz, now_ms() - 60_000, now_ms() + horizon_ms, valid_until)
    quiet = quiet_conflicts(db, targets, starts, tz) if priority < 3 else []
    devices = set(target_devices(db, targets))
    overlaps = []
    for ms in starts[:200]:
        rows = db.execute("SELECT o.id, o.start_at, COALESCE(o.end_at, o.start_at + COALESCE(m.duration_ms, 60000)), "
                          "o.priority, b.title FROM occurrences o LEFT JOIN bulletins b ON b.id = o.bulletin_id "
                          "LEFT JOIN media m ON m.sha256 = b.audio_sha256 WHERE o.cancelled = 0 AND o.start_at < ? "
                          "AND COALESCE(o.end_at, o.start_at + COALESCE(m.duration_ms, 60000)) > ?",
                          [ms + duration_ms, ms]).fetchall()
        for oid, o_start, _o_end, o_prio, title in rows:
            shared = devices & {r[0] for r in db.execute(
                "SELECT device_id FROM occurrence_devices WHERE occurrence_id = ?", [oid])}
            if not shared:
                continue
            when = dt.datetime.fromtimestamp(ms / 1000, ZoneInfo(tz)).strftime("%d/%m %H:%M")
            if priority > o_prio:
                overlaps.append(f"{when}: sẽ ngắt “{title}” trên {len(shared)} loa (mức cao hơn)")
            elif priority < o_prio:
                overlaps.append(f"{when}: sẽ chờ “{title}” phát xong trên {len(shared)} loa (mức thấp hơn)")
            else:
                overlaps.append(f"{when}: trùng giờ với “{title}” trên {len(shared)} loa, phát sau theo thứ tự")
    return Preview(starts, quiet, overlaps)


def add_schedule(db: sqlite_utils.Database, actor: Actor, tz: str, horizon_ms: int, *, bulletin_id: int | None,
                 rule: str | None, dtstart: int, targets: Targets, repeat: int = 1, valid_until: int | None = None,
                 relay_url: str | None = None, relay_minutes: int | None = None) -> int:
    """Save a schedule and expand its occurrences; refuses quiet-hour conflicts for
    non-emergency items. Durable when it returns."""
    if actor.role not in (Role.OPERATOR, Role.APPROVER, Role.ADMIN):
        raise ValidationError(["quyền: tài khoản này không được lên lịch phát"])
    if not 1 <= repeat <= MAX_REPEAT:
        raise ValidationError([f"số lần phát lại: từ 1 đến {MAX_REPEAT}"])
    _check_targets(db, targets)
    if relay_url is not None:
        if not relay_url.startswith(("http://", "https://")) or len(relay_url) > 2000:
            raise ValidationError(["địa chỉ luồng: phải bắt đầu bằng http:// hoặc https://"])
        if not relay_minutes or not 1 <= relay_minutes <= 24 * 60:
            raise ValidationError(["thời lượng tiếp sóng: từ 1 đến 1440 phút"])
        kind, priority, b = "relay", 0, None
    else:
        if bulletin_id is None:
            raise ValidationError(["bản tin: chọn bản tin cần phát"])
        b = get_bulletin(db, bulletin_id)
        if b.state not in (State.APPROVED, State.SCHEDULED):
            raise ValidationError(["bản tin: chỉ lên lịch được bản tin đã duyệt"])
        kind, priority = "play", b.level.priority
    starts = expand(rule, dtstart, tz, now_ms() - 60_000, now_ms() + horizon_ms, valid_until)
    if rule is None and dtstart < now_ms() - 60_000:
        raise ValidationError(["thời gian: giờ phát đã qua"])
    if priority < 3:
        conflicts = quiet_conflicts(db, targets, starts, tz)
        if conflicts:
            raise ValidationError(["giờ yên tĩnh: " + "; ".join(conflicts[:5])])
    with transaction(db):
        cur = db.execute("INSERT INTO schedules (bulletin_id, kind, rrule, dtstart, valid_until, repeat, targets, "
                         "relay_url, relay_minutes, priority, created_by, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                         [bulletin_id, kind, rule, dtstart, valid_until, repeat, targets.to_json(), relay_url,
                          relay_minutes, priority, actor.username, now_ms()])
        sid = cur.lastrowid
        expand_into(db, tz, horizon_ms, sid)
        if b is not None:
            mark_scheduled(db, actor, b)
        audit(db, actor, "schedule.add", "schedule", sid, {"bulletin": bulletin_id, "rrule": rule, "dtstart": dtstart,
                                                            "targets": json.loads(targets.to_json()), "kind": kind})
    return sid


def expand_into(db: sqlite_utils.Database, tz: str, horizon_ms: int, schedule_id: int | None = None) -> int:
    """Create the occurrences of active schedules up to now + horizon (idempotent)."""
    sql = ("SELECT id, bulletin_id, kind, rrule, dtstart, valid_until, targets, relay_minutes, priority "
           "FROM schedules WHERE active = 1")
    args: list = []
    if schedule_id is not None:
        sql += " AND id = ?"
        args.append(schedule_id)
    created = 0
    for sid, bid, kind, rule, dtstart, valid_until, targets_json, relay_minutes, prio in db.execute(sql, args).fetchall():
        targets = Targets.from_json(targets_json)
        devices = target_devices(db, targets)
        for ms in expand(rule, dtstart, tz, now_ms() - 60_000, now_ms() + horizon_ms, valid_until):
            oid = f"s{sid}-{ms}"
            end = ms + relay_minutes * 60_000 if kind == "relay" else None
            cur = db.execute("INSERT OR IGNORE INTO occurrences (id, schedule_id, bulletin_id, start_at, end_at, priority) "
                             "VALUES (?, ?, ?, ?, ?, ?)", [oid, sid, bid, ms, end, prio])
            if cur.rowcount:
                created += 1
                db.conn.executemany("INSERT OR IGNORE INTO occurrence_devices VALUES (?, ?)", [(oid, d) for d in devices])
    return created


def emergency_now(db: sqlite_utils.Database, actor: Actor, bulletin: Bulletin, targets: Targets, start_at: int) -> str:
    """Record an immediate emergency broadcast as a one-off occurrence (for proof of play)."""
    _check_targets(db, targets)
    with transaction(db):
        cur = db.execute("INSERT INTO schedules (bulletin_id, kind, rrule, dtstart, repeat, targets, priority, "
                         "created_by, created_at) VALUES (?, 'play', NULL, ?, 1, ?, 3, ?, ?)",
                         [bulletin.id, start_at, targets.to_json(), actor.username, now_ms()])
        sid = cur.lastrowid
        oid = f"s{sid}-{start_at}"
        db.execute("INSERT INTO occurrences (id, schedule_id, bulletin_id, start_at, priority) VALUES (?, ?, ?, ?, 3)",
                   [oid, sid, bulletin.id, start_at])
        db.conn.executemany("INSERT INTO occurrence_devices VALUES (?, ?)",
                            [(oid, d) for d in target_devices(db, targets)])
        db.execute("UPDATE schedules SET active = 0 WHERE id = ?", [sid])  # a one-off sent as a command
        mark_scheduled(db, actor, bulletin)
        audit(db, actor, "emergency.send", "occurrence", oid, {"bulletin": bulletin.id,
                                                               "targets": json.loads(targets.to_json())})
    return oid


LEVEL_VI = {Level.NORMAL: "thông thường", Level.PRIORITY: "ưu tiên", Level.EMERGENCY: "khẩn cấp"}


def stop_schedule(db: sqlite_utils.Database, actor: Actor, schedule_id: int, reason: str) -> int:
    """Stop a schedule: no new occurrences, the future ones cancelled (nodes drop them
    with the next schedule document). Returns how many occurrences were cancelled."""
    if actor.role not in (Role.OPERATOR, Role.APPROVER, Role.ADMIN):
        raise ValidationError(["quyền: tài khoản này không được dừng lịch phát"])
    if not reason or not reason.strip():
        raise ValidationError(["lý do: hãy ghi lý do dừng lịch"])
    row = db.execute("SELECT active FROM schedules WHERE id = ?", [schedule_id]).fetchone()
    if row is None:
        raise ValidationError([f"lịch: không có lịch số {schedule_id}"])
    if not row[0]:
        raise ValidationError([f"lịch: lịch số {schedule_id} đã dừng"])
    with transaction(db):
        db.execute("UPDATE schedules SET active = 0 WHERE id = ?", [schedule_id])
        n = db.execute("UPDATE occurrences SET cancelled = 1 WHERE schedule_id = ? AND start_at > ? AND cancelled = 0",
                       [schedule_id, now_ms()]).rowcount
        audit(db, actor, "schedule.stop", "schedule", schedule_id, {"reason": reason.strip(), "cancelled": n})
    return n


def active_schedules(db: sqlite_utils.Database, tz: str) -> list[dict]:
    """Schedules still producing occurrences, with their next start, for the console."""
    out = []
    for sid, bid, kind, rule, dtstart, targets_json, relay_url, prio, by, title in db.execute(
            "SELECT s.id, s.bulletin_id, s.kind, s.rrule, s.dtstart, s.targets, s.relay_url, s.priority, s.created_by, "
            "b.title FROM schedules s LEFT JOIN bulletins b ON b.id = s.bulletin_id WHERE s.active = 1 ORDER BY s.id"):
        nxt = db.execute("SELECT MIN(start_at) FROM occurrences WHERE schedule_id = ? AND cancelled = 0 AND start_at > ?",
                         [sid, now_ms()]).fetchone()[0]
        if rule is None and nxt is None:
            continue  # a one-off that has played
        t = Targets.from_json(targets_json)
        out.append({"id": sid, "bulletin_id": bid, "title": title or relay_url, "kind": kind, "rrule": rule,
                    "dtstart": dtstart, "next": nxt, "created_by": by, "priority": prio,
                    "targets": "tất cả" if t.all else ", ".join(list(t.groups) + list(t.devices))})
    return out

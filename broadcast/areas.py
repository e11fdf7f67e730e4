"""Residential groups (tổ dân phố / thôn), speaker devices, and station users."""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass

import sqlite_utils

from devices.errors import ValidationError
from devices.protocol import HHMM_PATTERN, ID_PATTERN

from .db import now_ms, transaction


class Role(enum.StrEnum):
    OPERATOR = "operator"
    APPROVER = "approver"
    TECHNICIAN = "technician"
    VIEWER = "viewer"
    ADMIN = "admin"


@dataclass(frozen=True)
class Actor:
    """Who does something: every workflow function takes one and audits it."""

    username: str
    role: Role


def audit(db: sqlite_utils.Database, actor: Actor | str, action: str, object_type: str, object_id: object,
          detail: dict | None = None) -> None:
    """Append one line to the audit log (in the caller's transaction)."""
    who = actor.username if isinstance(actor, Actor) else actor
    db.execute("INSERT INTO audit (at, actor, action, object_type, object_id, detail) VALUES (?, ?, ?, ?, ?, ?)",
               [now_ms(), who, action, object_type, str(object_id),
                json.dumps(detail, ensure_ascii=False) if detail else None])


def audit_log(db: sqlite_utils.Database, object_type: str | None = None, object_id: object = None) -> list[dict]:
    sql, args = "SELECT at, actor, action, object_type, object_id, detail FROM audit", []
    if object_type:
        sql += " WHERE object_type = ?" + (" AND object_id = ?" if object_id is not None else "")
        args = [object_type] + ([str(object_id)] if object_id is not None else [])
    rows = db.execute(sql + " ORDER BY id", args).fetchall()
    return [dict(at=r[0], actor=r[1], action=r[2], object_type=r[3], object_id=r[4],
                 detail=json.loads(r[5]) if r[5] else None) for r in rows]


def _check_id(value: str, field: str) -> str:
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise ValidationError([f"{field}: chỉ dùng chữ thường không dấu, số và '-', 1-64 ký tự (ví dụ: to-1)"])
    return value


def _check_hhmm(value: str | None, field: str) -> str | None:
    if value is None or value == "":
        return None
    if not re.fullmatch(HHMM_PATTERN, value):
        raise ValidationError([f"{field}: nhập giờ dạng HH:MM, ví dụ 22:00"])
    return value


def _check_gps(lat, lon) -> None:
    if (lat is None) != (lon is None):
        raise ValidationError(["gps: nhập cả vĩ độ và kinh độ, hoặc bỏ trống cả hai"])
    if lat is not None and not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ValidationError(["gps: vĩ độ trong khoảng -90..90, kinh độ -180..180"])


def add_user(db: sqlite_utils.Database, username: str, role: Role | str, display_name: str,
             password_hash: str | None = None) -> None:
    role = Role(role)
    if not re.fullmatch(r"[a-z0-9._-]{2,40}", username or ""):
        raise ValidationError(["tên đăng nhập: 2-40 ký tự chữ thường, số, '.', '_' hoặc '-'"])
    with transaction(db):
        db.execute("INSERT INTO users VALUES (?, ?, ?, ?, ?)", [username, role.value, display_name[:100],
                                                                password_hash, now_ms()])


def actor_for(db: sqlite_utils.Database, username: str) -> Actor:
    row = db.execute("SELECT role FROM users WHERE username = ?", [username]).fetchone()
    if row is None:
        raise ValidationError([f"người dùng: không có tài khoản {username!r}"])
    return Actor(username, Role(row[0]))


def save_group(db: sqlite_utils.Database, actor: Actor, code: str, name: str, *, lat: float | None = None,
               lon: float | None = None, quiet_start: str | None = None, quiet_end: str | None = None) -> None:
    _check_id(code, "mã tổ")
    if not name or len(name) > 200:
        raise ValidationError(["tên tổ: bắt buộc, tối đa 200 ký tự"])
    _check_gps(lat, lon)
    qs, qe = _check_hhmm(quiet_start, "giờ yên tĩnh bắt đầu"), _check_hhmm(quiet_end, "giờ yên tĩnh kết thúc")
    if (qs is None) != (qe is None):
        raise ValidationError(["giờ yên tĩnh: nhập cả giờ bắt đầu và giờ kết thúc"])
    with transaction(db):
        db.execute("INSERT INTO groups (code, name, lat, lon, quiet_start, quiet_end, created_at) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(code) DO UPDATE SET name=excluded.name, lat=excluded.lat, "
                   "lon=excluded.lon, quiet_start=excluded.quiet_start, quiet_end=excluded.quiet_end",
                   [code, name, lat, lon, qs, qe, now_ms()])
        audit(db, actor, "group.save", "group", code, {"name": name, "quiet": [qs, qe]})


def save_device(db: sqlite_utils.Database, actor: Actor, device_id: str, name: str, groups: list[str], *,
                location: str | None = None, lat: float | None = None, lon: float | None = None,
                volume: int = 70, max_volume: int = 100, emergency_volume: int = 100,
                warmup_ms: int = 1500, tail_ms: int = 2000) -> None:
    _check_id(device_id, "mã loa")
    for g in groups:
        _check_id(g, "tổ")
        if db.execute("SELECT 1 FROM groups WHERE code = ?", [g]).fetchone() is None:
            raise ValidationError([f"tổ: chưa có tổ {g!r}; hãy tạo tổ trước"])
    _check_gps(lat, lon)
    for field, v in (("âm lượng", volume), ("âm lượng tối đa", max_volume), ("âm lượng khẩn cấp", emergency_volume)):
        if not isinstance(v, int) or not 0 <= v <= 100:
            raise ValidationError([f"{field}: từ 0 đến 100"])
    if volume > max_volume:
        raise ValidationError(["âm lượng: không được lớn hơn âm lượng tối đa"])
    with transaction(db):
        db.execute("INSERT INTO devices (id, name, location, lat, lon, volume, max_volume, emergency_volume, "
                   "warmup_ms, tail_ms, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                   "ON CONFLICT(id) DO UPDATE SET name=excluded.name, location=excluded.location, lat=excluded.lat, "
                   "lon=excluded.lon, volume=excluded.volume, max_volume=excluded.max_volume, "
                   "emergency_volume=excluded.emergency_volume, warmup_ms=excluded.warmup_ms, tail_ms=excluded.tail_ms",
                   [device_id, name[:200], location, lat, lon, volume, max_volume, emergency_volume, warmup_ms,
                    tail_ms, now_ms()])
        db.execute("DELETE FROM device_groups WHERE device_id = ?", [device_id])
        for g in sorted(set(groups)):
            db.execute("INSERT INTO device_groups VALUES (?, ?)", [device_id, g])
        db.execute("UPDATE devices SET config_version = config_version + 1 WHERE id = ?", [device_id])
        audit(db, actor, "device.save", "device", device_id, {"groups": sorted(set(groups)), "volume": volume})


def device_groups(db: sqlite_utils.Database, device_id: str) -> list[str]:
    return [r[0] for r in db.execute("SELECT group_code FROM device_groups WHERE device_id = ? ORDER BY group_code",
                                     [device_id]).fetchall()]


def group_members(db: sqlite_utils.Database, code: str) -> list[str]:
    return [r[0] for r in db.execute("SELECT device_id FROM device_groups WHERE group_code = ? ORDER BY device_id",
                                     [code]).fetchall()]


def all_devices(db: sqlite_utils.Database) -> list[str]:
    return [r[0] for r in db.execute("SELECT id FROM devices ORDER BY id").fetchall()]


def all_groups(db: sqlite_utils.Database) -> list[dict]:
    return [dict(code=r[0], name=r[1], quiet_start=r[2], quiet_end=r[3]) for r in db.execute(
        "SELECT code, name, quiet_start, quiet_end FROM groups ORDER BY code").fetchall()]

"""Alerts a technician must see: a node offline too long, a node whose clock is off,
repeated play failures. Opened and closed as conditions change, never duplicated."""

from __future__ import annotations

import json
from dataclasses import dataclass

import sqlite_utils

from .db import now_ms, transaction

KIND_VI = {"offline": "mất kết nối", "clock": "lệch đồng hồ", "play_failures": "phát lỗi nhiều lần"}


@dataclass(frozen=True)
class Alert:
    id: int
    device_id: str
    kind: str
    opened_at: int
    closed_at: int | None
    detail: dict


def _conditions(db: sqlite_utils.Database, now: int, offline_minutes: int, clock_seconds: int,
                failure_count: int) -> dict[tuple[str, str], dict]:
    found: dict[tuple[str, str], dict] = {}
    for dev, online, since, created in db.execute(
            "SELECT d.id, s.online, s.since, d.created_at FROM devices d LEFT JOIN device_state s ON s.device_id = d.id"):
        down_since = created if online is None else (since if not online else None)
        if down_since is not None and now - down_since > offline_minutes * 60_000:
            found[(dev, "offline")] = {"since": down_since, "minutes": (now - down_since) // 60_000}
    for dev, telemetry, last_seen in db.execute("SELECT device_id, telemetry, last_seen FROM device_state "
                                                "WHERE online = 1 AND telemetry IS NOT NULL"):
        try:
            node_at = json.loads(telemetry).get("at")
        except ValueError:
            continue
        if isinstance(node_at, int) and abs(node_at - last_seen) > clock_seconds * 1000:
            found[(dev, "clock")] = {"offset_s": round((node_at - last_seen) / 1000, 1)}
    for dev, n, last_reason in db.execute(
            "SELECT device_id, COUNT(*), MAX(reason) FROM events WHERE type = 'play_failed' AND at > ? "
            "GROUP BY device_id HAVING COUNT(*) >= ?", [now - 86_400_000, failure_count]):
        found[(dev, "play_failures")] = {"count": n, "reason": last_reason}
    return found


def evaluate(db: sqlite_utils.Database, *, offline_minutes: int, clock_seconds: int, failure_count: int,
             now: int | None = None) -> list[Alert]:
    """Open new alerts and close cleared ones; returns the alerts opened now."""
    now = now or now_ms()
    found = _conditions(db, now, offline_minutes, clock_seconds, failure_count)
    opened = []
    with transaction(db):
        open_rows = {(r[1], r[2]): r[0] for r in db.execute(
            "SELECT id, device_id, kind FROM alerts WHERE closed_at IS NULL")}
        for key, alert_id in open_rows.items():
            if key not in found:
                db.execute("UPDATE alerts SET closed_at = ? WHERE id = ?", [now, alert_id])
        for (dev, kind), detail in found.items():
            if (dev, kind) in open_rows:
                continue
            cur = db.execute("INSERT INTO alerts (device_id, kind, opened_at, detail) VALUES (?, ?, ?, ?)",
                             [dev, kind, now, json.dumps(detail, ensure_ascii=False)])
            opened.append(Alert(cur.lastrowid, dev, kind, now, None, detail))
    return opened


def open_alerts(db: sqlite_utils.Database) -> list[Alert]:
    return [Alert(r[0], r[1], r[2], r[3], r[4], json.loads(r[5] or "{}")) for r in db.execute(
        "SELECT id, device_id, kind, opened_at, closed_at, detail FROM alerts WHERE closed_at IS NULL ORDER BY id")]


def describe(alert: Alert) -> str:
    d = alert.detail
    extra = {"offline": lambda: f"{d.get('minutes')} phút", "clock": lambda: f"{d.get('offset_s')} giây",
             "play_failures": lambda: f"{d.get('count')} lần trong 24 giờ"}[alert.kind]()
    return f"{alert.device_id}: {KIND_VI[alert.kind]} ({extra})"

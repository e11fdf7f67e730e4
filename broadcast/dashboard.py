"""What the console shows about the fleet and the month: every node's state in a few
bulk queries (fast with thousands of nodes), live emergency progress, telemetry
history, and the criterion-8 evidence of one month."""

from __future__ import annotations

import datetime as dt
import json
from zoneinfo import ZoneInfo

import sqlite_utils

from . import reports
from .alerts import KIND_VI, describe, open_alerts
from .db import now_ms

LOW_DISK_BYTES = 200 * 1024 * 1024


def nodes(db: sqlite_utils.Database, offline_minutes: int) -> list[dict]:
    """One row per device: groups, online, last seen, now playing, volume, free disk,
    documents held vs current, and its alerts (open alerts, plus low disk and an
    offline node past the threshold as seen now)."""
    now = now_ms()
    groups: dict[str, list[str]] = {}
    for dev, g in db.execute("SELECT device_id, group_code FROM device_groups ORDER BY group_code"):
        groups.setdefault(dev, []).append(g)
    current = {t: v for t, v in db.execute("SELECT target, version FROM documents WHERE target NOT LIKE 'config:%'")}
    held: dict[str, dict[str, int]] = {}
    for dev, target, version in db.execute("SELECT device_id, target, version FROM device_documents"):
        held.setdefault(dev, {})[target] = version
    alerts: dict[str, list[str]] = {}
    for a in open_alerts(db):
        alerts.setdefault(a.device_id, []).append(describe(a).split(": ", 1)[1])
    out = []
    for dev, name, location, cfg_volume, online, since, last_seen, version, tel_volume, disk, playing in db.execute(
            "SELECT d.id, d.name, d.location, d.volume, s.online, s.since, s.last_seen, s.version, "
            "CASE WHEN json_valid(s.telemetry) AND json_type(s.telemetry, '$.volume') = 'integer' "
            "     THEN json_extract(s.telemetry, '$.volume') END, "
            "CASE WHEN json_valid(s.telemetry) AND json_type(s.telemetry, '$.disk_free_bytes') = 'integer' "
            "     THEN json_extract(s.telemetry, '$.disk_free_bytes') END, "
            "CASE WHEN NOT json_valid(s.telemetry) THEN NULL "
            "     WHEN json_type(s.telemetry, '$.now_playing') = 'object' THEN COALESCE("
            "          json_extract(s.telemetry, '$.now_playing.title'), json_extract(s.telemetry, '$.now_playing.occurrence_id')) "
            "     WHEN json_type(s.telemetry, '$.now_playing') = 'text' THEN json_extract(s.telemetry, '$.now_playing') END "
            "FROM devices d LEFT JOIN device_state s ON s.device_id = d.id ORDER BY d.id"):
        targets = [f"devices/{dev}"] + [f"groups/{g}" for g in groups.get(dev, [])]
        docs = [{"target": t, "held": held.get(dev, {}).get(t, 0), "current": current[t]}
                for t in targets if t in current]
        dev_alerts = list(alerts.get(dev, []))
        if disk is not None and disk < LOW_DISK_BYTES:
            dev_alerts.append(f"sắp hết dung lượng ({disk // 1_048_576} MB trống)")
        is_online = bool(online)
        if not is_online and not any(a.startswith(KIND_VI["offline"]) for a in dev_alerts):
            down = since if online is not None else None
            if down is None or now - down > offline_minutes * 60_000:
                dev_alerts.append(KIND_VI["offline"] + (f" ({(now - down) // 60_000} phút)" if down else
                                                        " (chưa từng kết nối)"))
        out.append({
            "id": dev, "name": name, "location": location, "groups": groups.get(dev, []), "online": is_online,
            "last_seen": last_seen, "since": since, "version": version, "now_playing": str(playing)[:200] if playing and is_online else None,  # an offline node's last word is stale
            "volume": tel_volume if tel_volume is not None else cfg_volume,
            "disk_free_bytes": disk, "documents": docs,
            "up_to_date": all(d["held"] >= d["current"] for d in docs), "alerts": dev_alerts})
    return out


def needs_attention(row: dict) -> bool:
    return not row["online"] or bool(row["alerts"]) or not row["up_to_date"]


def filtered(rows: list[dict], group: str | None = None, problems: bool = False) -> list[dict]:
    """The rows of one group and/or only those that need a technician's attention."""
    return [r for r in rows if (not group or group in r["groups"]) and (not problems or needs_attention(r))]


def summary(rows: list[dict]) -> dict:
    return {"devices": len(rows), "online": sum(r["online"] for r in rows),
            "offline": sum(not r["online"] for r in rows), "playing": sum(bool(r["now_playing"]) for r in rows),
            "stale": sum(not r["up_to_date"] for r in rows), "alerts": sum(len(r["alerts"]) for r in rows)}


def emergency_progress(db: sqlite_utils.Database, occurrence_id: str) -> dict | None:
    """Which targeted nodes acked the emergency command and started/finished playing."""
    occ = db.execute("SELECT o.start_at, b.id, b.title FROM occurrences o LEFT JOIN bulletins b ON b.id = o.bulletin_id "
                     "WHERE o.id = ?", [occurrence_id]).fetchone()
    if occ is None:
        return None
    devices = [r[0] for r in db.execute("SELECT device_id FROM occurrence_devices WHERE occurrence_id = ? "
                                        "ORDER BY device_id", [occurrence_id])]
    acks: dict[str, tuple[str, str | None, int]] = {}
    for dev, status, reason, at in db.execute(
            "SELECT a.device_id, a.status, a.reason, a.at FROM acks a JOIN commands c ON c.cmd_id = a.cmd_id "
            "WHERE c.occurrence_id = ? ORDER BY a.at", [occurrence_id]):
        acks[dev] = (status, reason, at)
    events: dict[str, dict[str, int]] = {}
    for dev, etype, at in db.execute("SELECT device_id, type, at FROM events WHERE occurrence_id = ?", [occurrence_id]):
        events.setdefault(dev, {})[etype] = at
    online = {r[0]: bool(r[1]) for r in db.execute("SELECT device_id, online FROM device_state")}
    rows = []
    for dev in devices:
        ev = events.get(dev, {})
        ack = acks.get(dev)
        if "play_finished" in ev:
            state, label = "finished", "đã phát xong"
        elif "play_started" in ev:
            state, label = "playing", "đang phát"
        elif "play_failed" in ev:
            state, label = "failed", "phát lỗi"
        elif ack and ack[0] == "rejected":
            state, label = "rejected", f"từ chối ({ack[1] or ''})"
        elif ack:
            state, label = "acked", "đã nhận lệnh"
        else:
            state, label = "waiting", "chưa phản hồi" if online.get(dev) else "mất kết nối"
        rows.append({"device_id": dev, "state": state, "label": label, "ack": ack[0] if ack else None,
                     "ack_at": ack[2] if ack else None, "started_at": ev.get("play_started"),
                     "finished_at": ev.get("play_finished"), "online": online.get(dev, False)})
    return {"occurrence_id": occurrence_id, "start_at": occ[0], "bulletin_id": occ[1], "title": occ[2],
            "targeted": len(rows), "acked": sum(r["ack"] is not None for r in rows),
            "started": sum(r["started_at"] is not None for r in rows),
            "finished": sum(r["finished_at"] is not None for r in rows), "devices": rows}


def command_status(db: sqlite_utils.Database, cmd_id: str) -> list[dict]:
    return [{"device_id": r[0], "status": r[1], "reason": r[2], "at": r[3]} for r in db.execute(
        "SELECT device_id, status, reason, at FROM acks WHERE cmd_id = ? ORDER BY at", [cmd_id])]


def telemetry_history(db: sqlite_utils.Database, device_id: str, since_ms: int) -> list[dict]:
    out = []
    for at, text in db.execute("SELECT at, telemetry FROM telemetry_history WHERE device_id = ? AND at >= ? "
                               "ORDER BY at", [device_id, since_ms]):
        try:
            tel = json.loads(text)
        except ValueError:
            continue
        out.append({"at": at, "volume": tel.get("volume"), "cpu_temp_c": tel.get("cpu_temp_c"),
                    "rssi": tel.get("rssi"), "disk_free_bytes": tel.get("disk_free_bytes"),
                    "cache_bytes": tel.get("cache_bytes"), "uptime_s": tel.get("uptime_s"),
                    "clock_synced": tel.get("clock_synced")})
    return out


def month_bounds(month: str, tz: str) -> tuple[int, int]:
    """[start, end) in ms of 'YYYY-MM' in the ward's zone; ValueError when malformed."""
    d = dt.datetime.strptime(month, "%Y-%m")
    if not 2000 <= d.year <= 2100:
        raise ValueError(month)
    zone = ZoneInfo(tz)
    start = d.replace(tzinfo=zone)
    end = (d.replace(year=d.year + 1, month=1) if d.month == 12 else d.replace(month=d.month + 1)).replace(tzinfo=zone)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def utc_offset_ms(tz: str, at_ms: int) -> int:
    return int(dt.datetime.fromtimestamp(at_ms / 1000, ZoneInfo(tz)).utcoffset().total_seconds() * 1000)


def plays_per_day(summary: dict) -> dict:
    """Chart data from ``reports.period_summary``: per local day, plays by outcome."""
    days = sorted(summary["days"])
    labels = [dt.date.fromordinal(dt.date(1970, 1, 1).toordinal() + d).strftime("%d/%m") for d in days]
    return {"labels": labels, "series": {k.value: [summary["days"][d].get(k.value, 0) for d in days]
                                         for k in reports.Outcome}}


def criterion8(db: sqlite_utils.Database, start_ms: int, end_ms: int, tz: str = "Asia/Ho_Chi_Minh") -> dict:
    """Evidence for criterion 8 over [start, end): coverage per residential group,
    bulletins with their minutes on air, uptime per node, and the emergencies."""
    s = reports.period_summary_cached(db, start_ms, end_ms, utc_offset_ms(tz, start_ms))
    per_dev = {d.device_id: d for d in s["devices"]}
    groups = []
    for code, name in db.execute("SELECT code, name FROM groups ORDER BY code"):
        members = [r[0] for r in db.execute("SELECT device_id FROM device_groups WHERE group_code = ?", [code])]
        targeted = sum(per_dev[m].planned for m in members if m in per_dev)
        played = sum(per_dev[m].played for m in members if m in per_dev)
        groups.append({"code": code, "name": name, "devices": len(members), "targeted": targeted, "played": played,
                       "coverage_pct": round(100.0 * played / targeted, 1) if targeted else None})
    titles = {r[0]: (r[1], r[2]) for r in db.execute("SELECT id, title, level FROM bulletins")}
    bulletins = [{"id": b["bulletin_id"], "title": titles.get(b["bulletin_id"], ("?", ""))[0],
                  "level": titles.get(b["bulletin_id"], ("", "normal"))[1], "occurrences": b["occurrences"],
                  "targeted": b["targeted"], "played": b["played"], "minutes": b["minutes"],
                  "coverage_pct": round(100.0 * b["played"] / b["targeted"], 1) if b["targeted"] else 0.0}
                 for b in s["bulletins"]]
    names = {r[0]: r[1] for r in db.execute("SELECT id, name FROM devices")}
    uptime = [{"device_id": d.device_id, "name": names.get(d.device_id, ""), "uptime_pct": d.uptime_pct}
              for d in s["devices"]]
    known = [u["uptime_pct"] for u in uptime if u["uptime_pct"] is not None]
    emergencies = [{"occurrence_id": r[0], "start_at": r[1], "title": r[2], "actor": r[3], "targeted": r[4],
                    "played": s["emergency_played"].get(r[0], 0)} for r in db.execute(
        "SELECT o.id, o.start_at, b.title, s.created_by, (SELECT COUNT(*) FROM occurrence_devices od "
        "WHERE od.occurrence_id = o.id) FROM occurrences o JOIN schedules s ON s.id = o.schedule_id "
        "LEFT JOIN bulletins b ON b.id = o.bulletin_id WHERE o.priority = 3 AND o.start_at >= ? AND o.start_at < ? "
        "ORDER BY o.start_at", [start_ms, end_ms])]
    return {"groups": groups, "bulletins": bulletins, "uptime": uptime, "emergencies": emergencies,
            "totals": {"targeted": s["targeted"], "played": s["played"],
                       "coverage_pct": round(100.0 * s["played"] / s["targeted"], 1) if s["targeted"] else None,
                       "minutes": s["minutes"], "bulletins": len(bulletins), "devices": len(uptime),
                       "uptime_pct": round(sum(known) / len(known), 1) if known else None}}


def week(db: sqlite_utils.Database, tz: str, group: str | None, monday: dt.date) -> list[dict]:
    """Seven days from ``monday``: the occurrences that reach ``group`` (every group when
    None), each with its time, title, level, kind and whether it was cancelled."""
    zone = ZoneInfo(tz)
    start = int(dt.datetime.combine(monday, dt.time(), zone).timestamp() * 1000)
    end = int(dt.datetime.combine(monday + dt.timedelta(days=7), dt.time(), zone).timestamp() * 1000)
    sql = ("SELECT DISTINCT o.id, o.start_at, o.end_at, o.priority, o.cancelled, s.kind, s.rrule, s.relay_url, "
           "b.id, b.title FROM occurrences o JOIN schedules s ON s.id = o.schedule_id "
           "LEFT JOIN bulletins b ON b.id = o.bulletin_id ")
    args: list = [start, end]
    if group:
        sql += ("JOIN occurrence_devices od ON od.occurrence_id = o.id JOIN device_groups dg "
                "ON dg.device_id = od.device_id AND dg.group_code = ? ")
        args.insert(0, group)
    rows = db.execute(sql + "WHERE o.start_at >= ? AND o.start_at < ? ORDER BY o.start_at", args).fetchall()
    days = [{"date": monday + dt.timedelta(days=i), "items": []} for i in range(7)]
    for oid, s_at, e_at, prio, cancelled, kind, rrule, relay_url, bid, title in rows:
        local = dt.datetime.fromtimestamp(s_at / 1000, zone)
        idx = (local.date() - monday).days
        if 0 <= idx < 7:
            days[idx]["items"].append({
                "id": oid, "time": local.strftime("%H:%M"), "end": dt.datetime.fromtimestamp(
                    e_at / 1000, zone).strftime("%H:%M") if e_at else None,
                "priority": prio, "cancelled": bool(cancelled), "kind": kind, "repeating": bool(rrule),
                "title": title or (f"Tiếp sóng {relay_url}" if relay_url else "?"), "bulletin_id": bid})
    return days

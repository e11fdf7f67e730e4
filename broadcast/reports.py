"""Proof of play and the reports a ward files as evidence for criterion 8.

Every (occurrence, targeted node) pair gets exactly one outcome, derived from the node's
events (stored once each, by uuid):

- played: a play_finished lasting at least 90 % of the audio (× repeats)
- partial: it started but played less (finished short, or interrupted after some audio)
- failed: play_failed (with the node's reason)
- missed: the node reported it missed the start (it was off)
- interrupted: stopped or pre-empted and never finished
- not_reported: nothing arrived (yet) from that node
"""

from __future__ import annotations

import csv
import enum
import io
from dataclasses import asdict, dataclass

import sqlite_utils

from .db import now_ms


class Outcome(enum.StrEnum):
    PLAYED = "played"
    PARTIAL = "partial"
    FAILED = "failed"
    MISSED = "missed"
    INTERRUPTED = "interrupted"
    NOT_REPORTED = "not_reported"


@dataclass(frozen=True)
class PlayOutcome:
    occurrence_id: str
    device_id: str
    start_at: int
    bulletin_id: int | None
    outcome: Outcome
    seconds: float
    reason: str | None


def outcomes(db: sqlite_utils.Database, start_ms: int, end_ms: int, *, group: str | None = None,
             device: str | None = None) -> list[PlayOutcome]:
    sql = ("SELECT od.occurrence_id, od.device_id, o.start_at, o.bulletin_id, o.end_at, s.repeat, m.duration_ms "
           "FROM occurrence_devices od JOIN occurrences o ON o.id = od.occurrence_id "
           "JOIN schedules s ON s.id = o.schedule_id LEFT JOIN bulletins b ON b.id = o.bulletin_id "
           "LEFT JOIN media m ON m.sha256 = b.audio_sha256 "
           "WHERE o.cancelled = 0 AND o.start_at >= ? AND o.start_at < ?")
    args: list = [start_ms, end_ms]
    if device:
        sql += " AND od.device_id = ?"
        args.append(device)
    if group:
        sql += " AND od.device_id IN (SELECT device_id FROM device_groups WHERE group_code = ?)"
        args.append(group)
    rows = db.execute(sql + " ORDER BY o.start_at, od.device_id", args).fetchall()
    events: dict[tuple[str, str], list[tuple]] = {}
    for occ, dev, etype, dur, reason in db.execute(
            "SELECT occurrence_id, device_id, type, duration_ms, reason FROM events WHERE occurrence_id IN "
            "(SELECT o.id FROM occurrences o WHERE o.start_at >= ? AND o.start_at < ?)", [start_ms, end_ms]):
        events.setdefault((occ, dev), []).append((etype, dur or 0, reason))
    out = []
    for occ, dev, start, bid, end_at, repeat, media_ms in rows:
        expected = (end_at - start) if end_at else (media_ms or 0) * (repeat or 1)
        evs = events.get((occ, dev), [])
        types = {e[0] for e in evs}
        played_ms = max((e[1] for e in evs if e[0] in ("play_finished", "interrupted")), default=0)
        reason = next((e[2] for e in evs if e[0] in ("play_failed", "missed", "interrupted") and e[2]), None)
        if "play_finished" in types:
            outcome = Outcome.PLAYED if not expected or played_ms >= 0.9 * expected else Outcome.PARTIAL
            finished = max(e[1] for e in evs if e[0] == "play_finished")
            played_ms = max(played_ms, finished)
        elif "play_failed" in types:
            outcome = Outcome.FAILED
        elif "missed" in types:
            outcome = Outcome.MISSED
        elif "interrupted" in types:
            outcome = Outcome.PARTIAL if played_ms > 0 else Outcome.INTERRUPTED
        elif "play_started" in types:
            outcome = Outcome.INTERRUPTED if start < now_ms() - 6 * 3600 * 1000 else Outcome.NOT_REPORTED
        else:
            outcome = Outcome.NOT_REPORTED
        out.append(PlayOutcome(occ, dev, start, bid, outcome, round(played_ms / 1000, 1), reason))
    return out


@dataclass(frozen=True)
class DeviceSummary:
    device_id: str
    planned: int
    played: int
    partial: int
    failed: int
    missed: int
    not_reported: int
    minutes_on_air: float
    success_pct: float
    emergencies: int
    uptime_pct: float | None


def uptime_pct(db: sqlite_utils.Database, device_id: str, start_ms: int, end_ms: int) -> float | None:
    """Share of [start, end) the node was online, from its status history."""
    before = db.execute("SELECT online FROM status_history WHERE device_id = ? AND at < ? ORDER BY at DESC LIMIT 1",
                        [device_id, start_ms]).fetchone()
    changes = db.execute("SELECT at, online FROM status_history WHERE device_id = ? AND at >= ? AND at < ? ORDER BY at",
                         [device_id, start_ms, end_ms]).fetchall()
    if before is None and not changes:
        return None
    state = bool(before[0]) if before else False
    t, online_ms = start_ms, 0
    for at, online in changes:
        if state:
            online_ms += at - t
        t, state = at, bool(online)
    end = min(end_ms, now_ms())
    if state and end > t:
        online_ms += end - t
    span = max(1, end - start_ms)
    return round(100.0 * online_ms / span, 2)


def device_summary(db: sqlite_utils.Database, start_ms: int, end_ms: int, group: str | None = None) -> list[DeviceSummary]:
    per: dict[str, list[PlayOutcome]] = {}
    for o in outcomes(db, start_ms, end_ms, group=group):
        per.setdefault(o.device_id, []).append(o)
    emergency = {r[0] for r in db.execute("SELECT id FROM occurrences WHERE priority = 3")}
    devices = [r[0] for r in db.execute(
        "SELECT id FROM devices" + (" WHERE id IN (SELECT device_id FROM device_groups WHERE group_code = ?)" if group
                                    else "") + " ORDER BY id", [group] if group else [])]
    out = []
    for dev in devices:
        rows = per.get(dev, [])
        count = lambda oc: sum(1 for r in rows if r.outcome is oc)  # noqa: E731
        played = count(Outcome.PLAYED)
        out.append(DeviceSummary(
            dev, len(rows), played, count(Outcome.PARTIAL), count(Outcome.FAILED), count(Outcome.MISSED),
            count(Outcome.NOT_REPORTED), round(sum(r.seconds for r in rows) / 60, 2),
            round(100.0 * played / len(rows), 1) if rows else 100.0,
            sum(1 for r in rows if r.occurrence_id in emergency and r.outcome is Outcome.PLAYED),
            uptime_pct(db, dev, start_ms, end_ms)))
    return out


def coverage(db: sqlite_utils.Database, bulletin_id: int) -> dict:
    """Share of targeted nodes that played each occurrence of a bulletin (only that
    bulletin's plays are classified, however large the history)."""
    classify_period(db, 0, 2**62, bulletin_id)
    occ = [{"occurrence_id": r[0], "targeted": r[1], "played": r[2], "coverage_pct": round(100.0 * r[2] / r[1], 1)}
           for r in db.execute("SELECT occurrence_id, COUNT(*), SUM(outcome = 'played') FROM temp.period_outcomes "
                               "GROUP BY occurrence_id ORDER BY MIN(start_at), occurrence_id")]
    total = sum(o["targeted"] for o in occ)
    played = sum(o["played"] for o in occ)
    return {"bulletin_id": bulletin_id, "occurrences": occ, "targeted_plays": total, "played": played,
            "coverage_pct": round(100.0 * played / total, 1) if total else 0.0}


def offline_now(db: sqlite_utils.Database) -> list[dict]:
    return [{"device_id": r[0], "offline_since": r[1]} for r in db.execute(
        "SELECT d.id, COALESCE(s.since, d.created_at) FROM devices d LEFT JOIN device_state s ON s.device_id = d.id "
        "WHERE s.online IS NULL OR s.online = 0 ORDER BY d.id")]


def to_csv(rows: list) -> str:
    buf = io.StringIO()
    if not rows:
        return ""
    dicts = [asdict(r) if hasattr(r, "__dataclass_fields__") else dict(r) for r in rows]
    w = csv.DictWriter(buf, fieldnames=list(dicts[0]))
    w.writeheader()
    for d in dicts:
        w.writerow({k: (v.value if isinstance(v, enum.Enum) else v) for k, v in d.items()})
    return buf.getvalue()


# --- the same outcomes, computed in SQL for whole periods (console pages, thousands of nodes)

_CLASSIFY = """
WITH occ AS (
    SELECT o.id, o.start_at, o.end_at, o.priority, o.bulletin_id, s.repeat, m.duration_ms AS media_ms
    FROM occurrences o JOIN schedules s ON s.id = o.schedule_id
    LEFT JOIN bulletins b ON b.id = o.bulletin_id LEFT JOIN media m ON m.sha256 = b.audio_sha256
    WHERE o.cancelled = 0 AND o.start_at >= :start AND o.start_at < :end
      AND (:bulletin IS NULL OR o.bulletin_id = :bulletin)),
ev AS (
    SELECT e.occurrence_id AS occ, e.device_id AS dev,
           MAX(e.type = 'play_finished') AS fin,
           MAX(CASE WHEN e.type IN ('play_finished', 'interrupted') THEN COALESCE(e.duration_ms, 0) ELSE 0 END) AS played_ms,
           MAX(e.type = 'play_failed') AS failed, MAX(e.type = 'missed') AS missed,
           MAX(e.type = 'interrupted') AS intr, MAX(e.type = 'play_started') AS started,
           MAX(CASE WHEN e.type IN ('play_failed', 'missed', 'interrupted') THEN e.reason END) AS reason
    FROM events e WHERE e.occurrence_id IN (SELECT id FROM occ) GROUP BY e.occurrence_id, e.device_id)
SELECT od.device_id, occ.id, occ.start_at, occ.priority, occ.bulletin_id,
    CASE WHEN ev.fin THEN CASE WHEN (CASE WHEN occ.end_at IS NOT NULL THEN occ.end_at - occ.start_at
                                          ELSE COALESCE(occ.media_ms, 0) * COALESCE(occ.repeat, 1) END) = 0
                                    OR ev.played_ms >= 0.9 * (CASE WHEN occ.end_at IS NOT NULL THEN occ.end_at - occ.start_at
                                          ELSE COALESCE(occ.media_ms, 0) * COALESCE(occ.repeat, 1) END)
                               THEN 'played' ELSE 'partial' END
         WHEN ev.failed THEN 'failed'
         WHEN ev.missed THEN 'missed'
         WHEN ev.intr THEN CASE WHEN ev.played_ms > 0 THEN 'partial' ELSE 'interrupted' END
         WHEN ev.started AND occ.start_at < :stale THEN 'interrupted'
         ELSE 'not_reported' END,
    COALESCE(ev.played_ms, 0), ev.reason
FROM occ JOIN occurrence_devices od ON od.occurrence_id = occ.id
LEFT JOIN ev ON ev.occ = occ.id AND ev.dev = od.device_id
"""


def classify_period(db: sqlite_utils.Database, start_ms: int, end_ms: int, bulletin_id: int | None = None) -> None:
    """Fill the connection's temporary table ``period_outcomes`` (device, occurrence,
    start, priority, bulletin, outcome, played_ms, reason) with exactly what
    ``outcomes()`` would say for [start, end), in one SQL pass."""
    db.execute("CREATE TEMP TABLE IF NOT EXISTS period_outcomes (device_id TEXT, occurrence_id TEXT, start_at INTEGER, "
               "priority INTEGER, bulletin_id INTEGER, outcome TEXT, played_ms INTEGER, reason TEXT)")
    db.execute("DELETE FROM temp.period_outcomes")
    db.execute("INSERT INTO temp.period_outcomes " + _CLASSIFY,
               {"start": start_ms, "end": end_ms, "stale": now_ms() - 6 * 3600 * 1000, "bulletin": bulletin_id})


def period_summary(db: sqlite_utils.Database, start_ms: int, end_ms: int, utc_offset_ms: int = 7 * 3_600_000) -> dict:
    """Everything the report pages show for a period: totals per outcome, per day, per
    device (as ``DeviceSummary``), per bulletin, per occurrence for emergencies, and the
    latest outcomes. ``utc_offset_ms`` places plays on the ward's local days."""
    classify_period(db, start_ms, end_ms)
    t = "temp.period_outcomes"
    counts = {o.value: 0 for o in Outcome}
    for outcome, n in db.execute(f"SELECT outcome, COUNT(*) FROM {t} GROUP BY outcome"):
        counts[outcome] = n
    days: dict[int, dict[str, int]] = {}
    for day, outcome, n in db.execute(f"SELECT (start_at + ?) / 86400000, outcome, COUNT(*) FROM {t} "
                                      "GROUP BY 1, 2 ORDER BY 1", [utc_offset_ms]):
        days.setdefault(day, {})[outcome] = n
    per_dev = {r[0]: r[1:] for r in db.execute(
        f"SELECT device_id, COUNT(*), SUM(outcome = 'played'), SUM(outcome = 'partial'), SUM(outcome = 'failed'), "
        f"SUM(outcome = 'missed'), SUM(outcome = 'not_reported'), SUM(played_ms), "
        f"SUM(priority = 3 AND outcome = 'played') FROM {t} GROUP BY device_id")}
    uptimes = uptime_many(db, start_ms, end_ms)
    devices = []
    for dev, in db.execute("SELECT id FROM devices ORDER BY id"):
        n, played, partial, failed, missed, nrep, ms, em = per_dev.get(dev, (0, 0, 0, 0, 0, 0, 0, 0))
        devices.append(DeviceSummary(dev, n, played, partial, failed, missed, nrep, round(ms / 60_000, 2),
                                     round(100.0 * played / n, 1) if n else 100.0, em, uptimes.get(dev)))
    bulletins = [dict(bulletin_id=r[0], occurrences=r[1], targeted=r[2], played=r[3], minutes=round(r[4] / 60_000, 1))
                 for r in db.execute(f"SELECT bulletin_id, COUNT(DISTINCT occurrence_id), COUNT(*), "
                                     f"SUM(outcome = 'played'), SUM(played_ms) FROM {t} WHERE bulletin_id IS NOT NULL "
                                     f"GROUP BY bulletin_id ORDER BY bulletin_id")]
    played_by_occ = {r[0]: r[1] for r in db.execute(
        f"SELECT occurrence_id, SUM(outcome = 'played') FROM {t} WHERE priority = 3 GROUP BY occurrence_id")}
    latest = [PlayOutcome(r[1], r[0], r[2], r[4], Outcome(r[5]), round(r[6] / 1000, 1), r[7]) for r in db.execute(
        f"SELECT device_id, occurrence_id, start_at, priority, bulletin_id, outcome, played_ms, reason FROM {t} "
        f"ORDER BY start_at DESC, device_id LIMIT 200")]
    return {"counts": counts, "days": days, "devices": devices, "bulletins": bulletins,
            "emergency_played": played_by_occ, "latest": latest, "targeted": sum(counts.values()),
            "played": counts["played"], "minutes": round(sum(d.minutes_on_air for d in devices), 1)}


def uptime_many(db: sqlite_utils.Database, start_ms: int, end_ms: int) -> dict[str, float | None]:
    """``uptime_pct`` of every device in two queries."""
    before = {r[0]: bool(r[1]) for r in db.execute(
        "SELECT h.device_id, h.online FROM status_history h JOIN (SELECT device_id, MAX(at) AS at FROM status_history "
        "WHERE at < ? GROUP BY device_id) last ON last.device_id = h.device_id AND last.at = h.at", [start_ms])}
    changes: dict[str, list[tuple[int, int]]] = {}
    for dev, at, online in db.execute("SELECT device_id, at, online FROM status_history WHERE at >= ? AND at < ? "
                                      "ORDER BY device_id, at", [start_ms, end_ms]):
        changes.setdefault(dev, []).append((at, online))
    end = min(end_ms, now_ms())
    span = max(1, end - start_ms)
    out: dict[str, float | None] = {}
    for dev in set(before) | set(changes):
        state = before.get(dev, False)
        t, online_ms = start_ms, 0
        for at, online in changes.get(dev, []):
            if state:
                online_ms += at - t
            t, state = at, bool(online)
        if state and end > t:
            online_ms += end - t
        out[dev] = round(100.0 * online_ms / span, 2)
    return out


_CACHE: dict[tuple, dict] = {}
_CACHE_MAX = 16


def _fingerprint(db: sqlite_utils.Database) -> tuple:
    """Changes whenever anything a period summary reads changes (new events, plays
    planned, bulletins edited or cancelled, node status, devices), and every minute
    (stale-start rule, uptime up to now)."""
    row = db.execute(
        "SELECT (SELECT MAX(rowid) FROM events), (SELECT MAX(rowid) FROM occurrence_devices), "
        "(SELECT MAX(updated_at) FROM bulletins), (SELECT MAX(rowid) FROM status_history), "
        "(SELECT COUNT(*) FROM devices), (SELECT MAX(rowid) FROM occurrences), "
        "(SELECT COUNT(*) FROM occurrences WHERE cancelled = 1)").fetchone()
    return tuple(row) + (now_ms() // 60_000,)


def period_summary_cached(db: sqlite_utils.Database, start_ms: int, end_ms: int,
                          utc_offset_ms: int = 7 * 3_600_000) -> dict:
    """``period_summary`` remembered until the data under it changes (or a minute passes)."""
    path = db.execute("PRAGMA database_list").fetchone()[2]
    key = (path, start_ms, end_ms, utc_offset_ms, _fingerprint(db))
    found = _CACHE.get(key)
    if found is None:
        found = period_summary(db, start_ms, end_ms, utc_offset_ms)
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = found
    return found

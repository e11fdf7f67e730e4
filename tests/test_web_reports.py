"""The console's report figures: the SQL classification (fast with 100,000 plays) says
exactly what the reference ``reports.outcomes`` says for every kind of outcome; the
cache follows new data; criterion-8 coverage per group adds up."""

from __future__ import annotations

import random
import uuid

from broadcast import areas, dashboard, reports
from broadcast.db import now_ms, open_db, transaction

TYPES = ["play_finished_full", "play_finished_short", "play_failed", "missed", "interrupted_some",
         "interrupted_none", "started_old", "started_recent", "nothing"]


def build(tmp_path):
    db = open_db(tmp_path / "station.db")
    admin = areas.Actor("quantri", areas.Role.ADMIN)
    areas.add_user(db, "quantri", "admin", "Quản trị")
    areas.save_group(db, admin, "to-1", "Tổ 1")
    areas.save_group(db, admin, "to-2", "Tổ 2")
    devs = [f"loa-{i}" for i in range(12)]
    for i, d in enumerate(devs):
        areas.save_device(db, admin, d, d, ["to-1" if i % 2 else "to-2"])
    now = now_ms()
    rnd = random.Random(3)
    with transaction(db):
        db.execute("INSERT INTO media VALUES (?, 'a.wav', 'wav', 10, 30000, 22050, 1, 'tts', ?)", ["a" * 64, now])
        db.execute("INSERT INTO bulletins (title, level, audio_sha256, author, state, created_at, updated_at) "
                   "VALUES ('B', 'normal', ?, 'quantri', 'scheduled', ?, ?)", ["a" * 64, now, now])
        for k in range(12):
            start = now - (k + 1) * 2 * 3_600_000  # some older than 6 h, some newer
            prio = 3 if k == 0 else 1
            sid = db.execute("INSERT INTO schedules (bulletin_id, kind, dtstart, repeat, targets, priority, created_by, "
                             "created_at) VALUES (1, 'play', ?, ?, '{\"all\": true}', ?, 'quantri', ?)",
                             [start, 1 + k % 2, prio, now]).lastrowid
            oid = f"s{sid}-{start}"
            db.execute("INSERT INTO occurrences (id, schedule_id, bulletin_id, start_at, priority) VALUES (?,?,1,?,?)",
                       [oid, sid, start, prio])
            for d in devs:
                db.execute("INSERT INTO occurrence_devices VALUES (?, ?)", [oid, d])
                kind = rnd.choice(TYPES)
                expected = 30000 * (1 + k % 2)

                def ev(t, dur=None, reason=None):
                    db.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?, NULL, ?, NULL, ?, 70, ?, ?)",
                               [str(uuid.uuid4()), d, t, start, oid, start, dur, reason, now])
                if kind == "play_finished_full":
                    ev("play_started"), ev("play_finished", expected)
                elif kind == "play_finished_short":
                    ev("play_started"), ev("play_finished", expected // 3)
                elif kind == "play_failed":
                    ev("play_failed", reason="decode")
                elif kind == "missed":
                    ev("missed", reason="powered_off")
                elif kind == "interrupted_some":
                    ev("play_started"), ev("interrupted", 5000, "preempted")
                elif kind == "interrupted_none":
                    ev("interrupted", 0, "stopped")
                elif kind in ("started_old", "started_recent"):
                    ev("play_started")
    return db, devs


def test_sql_classification_matches_the_reference(tmp_path):
    db, devs = build(tmp_path)
    lo, hi = now_ms() - 40 * 3_600_000, now_ms() + 3_600_000
    ref = {(o.occurrence_id, o.device_id): (o.outcome, o.seconds, o.reason) for o in reports.outcomes(db, lo, hi)}
    reports.classify_period(db, lo, hi)
    got = {(r[0], r[1]): (reports.Outcome(r[2]), round(r[3] / 1000, 1), r[4]) for r in db.execute(
        "SELECT occurrence_id, device_id, outcome, played_ms, reason FROM temp.period_outcomes")}
    assert got == ref
    assert {o for o, _s, _r in ref.values()} == set(reports.Outcome)  # every kind was exercised
    summary = reports.period_summary(db, lo, hi)
    assert summary["devices"] == reports.device_summary(db, lo, hi)
    cov = reports.coverage(db, 1)
    played = sum(1 for o, _s, _r in ref.values() if o is reports.Outcome.PLAYED)
    assert cov["targeted_plays"] == len(ref) and cov["played"] == played and len(cov["occurrences"]) == 12
    assert reports.coverage(db, 99) == {"bulletin_id": 99, "occurrences": [], "targeted_plays": 0, "played": 0,
                                        "coverage_pct": 0.0}
    assert sum(summary["counts"].values()) == len(ref) == 12 * len(devs)


def test_cache_follows_new_events_and_criterion8_adds_up(tmp_path):
    db, devs = build(tmp_path)
    lo, hi = now_ms() - 40 * 3_600_000, now_ms() + 3_600_000
    first = reports.period_summary_cached(db, lo, hi)
    assert reports.period_summary_cached(db, lo, hi) is first
    oid, dev = db.execute("SELECT occurrence_id, device_id FROM occurrence_devices LIMIT 1").fetchone()
    with transaction(db):
        db.execute("INSERT INTO events VALUES (?, ?, 'play_finished', ?, ?, NULL, NULL, NULL, 60000, 70, NULL, ?)",
                   [str(uuid.uuid4()), dev, now_ms(), oid, now_ms()])
    again = reports.period_summary_cached(db, lo, hi)
    assert again is not first
    c8 = dashboard.criterion8(db, lo, hi)
    assert sum(g["targeted"] for g in c8["groups"]) == c8["totals"]["targeted"] == 12 * len(devs)
    assert sum(g["played"] for g in c8["groups"]) == c8["totals"]["played"]
    assert len(c8["emergencies"]) == 1 and c8["emergencies"][0]["targeted"] == len(devs)


def test_dashboard_rows_show_versions_and_every_kind_of_alert(tmp_path):
    import json as _json

    from broadcast import alerts

    db, devs = build(tmp_path)
    now = now_ms()
    with transaction(db):
        db.execute("INSERT INTO device_state VALUES ('loa-0', 1, ?, ?, '0.1.0', ?)",
                   [now - 1000, now - 1000, _json.dumps({"volume": 55, "disk_free_bytes": 50 * 1024 * 1024,
                                                          "now_playing": {"title": "Bản tin sáng"}})])
        db.execute("INSERT INTO device_state VALUES ('loa-1', 0, ?, ?, '0.1.0', NULL)",
                   [now - 30 * 60_000, now - 30 * 60_000])
        db.execute("INSERT INTO device_state VALUES ('loa-2', 0, ?, ?, '0.1.0', 'not json')", [now - 60_000, now - 60_000])
        db.execute("INSERT INTO documents VALUES ('groups/to-2', 4, 'x', ?)", [now])
        db.execute("INSERT INTO device_documents VALUES ('loa-0', 'groups/to-2', 3, ?)", [now])
        for _ in range(3):
            db.execute("INSERT INTO events VALUES (?, 'loa-4', 'play_failed', ?, NULL, NULL, NULL, NULL, NULL, NULL, "
                       "'decode', ?)", [str(uuid.uuid4()), now, now])
    alerts.evaluate(db, offline_minutes=10, clock_seconds=30, failure_count=3)
    rows = {r["id"]: r for r in dashboard.nodes(db, offline_minutes=10)}
    a0 = rows["loa-0"]
    assert a0["online"] and a0["volume"] == 55 and a0["now_playing"] == "Bản tin sáng"
    assert a0["documents"] == [{"target": "groups/to-2", "held": 3, "current": 4}] and not a0["up_to_date"]
    assert any("sắp hết dung lượng" in a for a in a0["alerts"])
    assert any("mất kết nối" in a for a in rows["loa-1"]["alerts"])  # 30 min > 10 min
    assert rows["loa-2"]["alerts"] == [] and rows["loa-2"]["now_playing"] is None  # 1 min offline: not yet
    assert any("phát lỗi nhiều lần" in a for a in rows["loa-4"]["alerts"])
    assert any("chưa từng kết nối" in a for a in rows["loa-5"]["alerts"])
    s = dashboard.summary(list(rows.values()))
    assert s["devices"] == 12 and s["online"] == 1 and s["playing"] == 1 and s["stale"] == 6  # to-2 nodes hold 0 of 4

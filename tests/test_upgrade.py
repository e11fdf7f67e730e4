"""Upgrade path: databases written by the previous release open with the current code.

A station and a speaker-agent database are built with the previous release's schema
(tests/previous_release_schema.py, frozen from commit 1cd9d5f), filled with the kind of
rows a ward has after months of use, closed, then opened by today's code: the missing
migrations apply, every row survives, the result has the same schema as a fresh database,
and the current functions work on it.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from devices.sqlite import connect, migrate
from tests import previous_release_schema as old

ROOT = Path(__file__).resolve().parent.parent
DAY = 86_400_000
T0 = 1_764_000_000_000  # 2025-11-24, an arbitrary past time


def schema(path: Path) -> dict[str, list[tuple]]:
    """table → its columns (name, type, notnull, default, pk); plus index and trigger names."""
    conn = sqlite3.connect(path)
    try:
        out = {}
        for name, kind in conn.execute("SELECT name, type FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' "
                                       "ORDER BY name"):
            if kind == "table":
                out[name] = [tuple(r[1:]) for r in conn.execute(f"PRAGMA table_info({name})")]
            else:
                out[name] = [(kind,)]
        return out
    finally:
        conn.close()


def test_frozen_schema_matches_the_release_in_git():
    """The frozen copy is the release's code (checked when the git history is present)."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    for path, frozen in (("broadcast/db.py", old.STATION_MIGRATIONS), ("devices/agent/store.py", old.AGENT_MIGRATIONS)):
        out = subprocess.run(["git", "show", f"{old.RELEASE}:{path}"], cwd=ROOT, capture_output=True, text=True)
        if out.returncode != 0:
            pytest.skip(f"commit {old.RELEASE} is not in this clone")
        for name, sql in frozen:
            assert f'("{name}", """{sql}""")' in out.stdout, f"{path} {name} differs from {old.RELEASE}"


# --- station ---------------------------------------------------------------------------------

def build_old_station(path: Path) -> None:
    db = connect(path, "old station db")
    assert migrate(db, old.STATION_MIGRATIONS) == [n for n, _ in old.STATION_MIGRATIONS]
    x = db.execute
    x("INSERT INTO users VALUES ('admin', 'admin', 'Quản trị', NULL, ?)", [T0])
    x("INSERT INTO users VALUES ('vanthu', 'operator', 'Văn thư đài', NULL, ?)", [T0])
    x("INSERT INTO groups VALUES ('to-1', 'Tổ dân phố 1', 16.1, 108.2, '22:00', '05:00', ?)", [T0])
    for d in ("loa-1", "loa-2"):
        x("INSERT INTO devices (id, name, location, volume, created_at) VALUES (?, ?, 'Chợ Hoài Thanh', 65, ?)",
          [d, f"Cụm loa {d}", T0])
        x("INSERT INTO device_groups VALUES (?, 'to-1')", [d])
        x("INSERT INTO status_history VALUES (?, 1, ?)", [d, T0])
        x("INSERT INTO device_state VALUES (?, 1, ?, ?, '0.0.9', '{\"volume\": 65}')", [d, T0, T0 + 3 * DAY])
    sha = "ab" * 32
    x("INSERT INTO media VALUES (?, 'tiem-phong.mp3', 'mp3', 48000, 30000, 22050, 1, 'tts', ?)", [sha, T0])
    x("INSERT INTO bulletins (title, level, text, audio_sha256, author, state, created_at, updated_at) "
      "VALUES ('Thông báo tiêm phòng', 'normal', 'Kính mời bà con…', ?, 'vanthu', 'scheduled', ?, ?)", [sha, T0, T0])
    x("INSERT INTO schedules (bulletin_id, kind, rrule, dtstart, targets, priority, created_by, created_at) "
      "VALUES (1, 'play', 'FREQ=DAILY', ?, '{\"all\": true}', 1, 'vanthu', ?)", [T0, T0])
    for k in range(3):
        oid = f"s1-{T0 + k * DAY}"
        x("INSERT INTO occurrences VALUES (?, 1, 1, ?, ?, 1, 0)", [oid, T0 + k * DAY, T0 + k * DAY + 30_000])
        for d in ("loa-1", "loa-2"):
            x("INSERT INTO occurrence_devices VALUES (?, ?)", [oid, d])
            start = T0 + k * DAY
            x("INSERT INTO events VALUES (?, ?, 'play_finished', ?, ?, 'b1', ?, ?, 30000, 65, NULL, ?)",
              [f"ev-{k}-{d}", d, start + 30_000, oid, start, start + 30_000, start + 31_000])
            x("INSERT INTO acks VALUES (?, ?, 'done', NULL, ?)", [f"cmd-{k}", d, start])
    x("INSERT INTO documents VALUES ('groups/to-1', 3, 'digest', ?)", [T0])
    x("INSERT INTO device_documents VALUES ('loa-1', 'groups/to-1', 3, ?)", [T0])
    x("INSERT INTO audit (at, actor, action, object_type, object_id, detail) "
      "VALUES (?, 'vanthu', 'bulletin.create', 'bulletin', '1', '{\"title\": \"Thông báo tiêm phòng\"}')", [T0])
    x("INSERT INTO alerts (device_id, kind, opened_at, detail) VALUES ('loa-2', 'offline', ?, 'mất kết nối')", [T0])
    db.conn.close()


def test_station_database_of_the_previous_release_upgrades(tmp_path):
    from broadcast import areas, bulletins, reports
    from broadcast.db import MIGRATIONS, open_db

    path = tmp_path / "station.db"
    build_old_station(path)
    before = {t: n for t, n in ((t, sqlite3.connect(path).execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])
                                for t in ("users", "groups", "devices", "events", "acks", "occurrences", "audit",
                                          "alerts", "status_history", "device_state"))}
    db = open_db(path)
    try:
        applied = [r[0] for r in db.execute("SELECT name FROM migrations ORDER BY name")]
        assert applied == sorted(n for n, _ in MIGRATIONS)
        for table, n in before.items():
            assert db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == n, table
        assert db.execute("SELECT name, quiet_start FROM groups").fetchone() == ("Tổ dân phố 1", "22:00")
        b = bulletins.get(db, 1)
        assert b.title == "Thông báo tiêm phòng" and b.state is bulletins.State.SCHEDULED
        assert areas.device_groups(db, "loa-1") == ["to-1"]
        log = areas.audit_log(db, "bulletin", 1)
        assert log and log[0]["action"] == "bulletin.create"
        with pytest.raises(Exception, match="append-only"):
            db.execute("UPDATE audit SET actor = 'x'")
        summary = {s.device_id: s for s in reports.device_summary(db, T0 - DAY, T0 + 4 * DAY)}
        assert summary["loa-1"].planned == 3 and summary["loa-1"].played == 3
        # the current code writes to it as usual
        areas.save_device(db, areas.Actor("admin", areas.Role.ADMIN), "loa-3", "Cụm loa mới", ["to-1"])
    finally:
        db.conn.close()
    # opening again applies nothing, and the result is what a fresh install creates
    again = open_db(path)
    assert again.execute("SELECT COUNT(*) FROM migrations").fetchone()[0] == len(MIGRATIONS)
    again.conn.close()
    fresh = tmp_path / "fresh.db"
    open_db(fresh).conn.close()
    assert schema(path) == schema(fresh)


def test_station_backup_of_the_previous_release_restores_and_upgrades(tmp_path):
    """A backup taken before the upgrade is still usable after it (restore, then migrate)."""
    from broadcast.backup import restore
    from broadcast.db import MIGRATIONS, open_db

    backup = tmp_path / "backups" / "station-20251124-030000.db"
    backup.parent.mkdir()
    build_old_station(backup)
    live = tmp_path / "data" / "station.db"
    open_db(live).conn.close()
    restore(backup, live)
    db = open_db(live)
    try:
        assert db.execute("SELECT COUNT(*) FROM migrations").fetchone()[0] == len(MIGRATIONS)
        assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 6
    finally:
        db.conn.close()


# --- speaker agent ------------------------------------------------------------------------------

def build_old_agent(path: Path) -> dict:
    db = connect(path, "old node db")
    migrate(db, old.AGENT_MIGRATIONS)
    x = db.execute
    future = T0 + 365 * DAY * 20  # pending for the rest of this test's life
    media = {"url": "http://station/media/" + "cd" * 32, "sha256": "cd" * 32, "bytes": 1000}
    item = {"occurrence_id": "s1-future", "start_at": future, "media": media, "priority": 1}
    x("INSERT INTO state VALUES ('volume', '55')")
    x("INSERT INTO state VALUES ('schedule_versions', ?)", [json.dumps({"groups/to-1": 7})])
    x("INSERT INTO schedule_item VALUES ('groups/to-1', 's1-future', ?, 1, ?)", [future, json.dumps(item)])
    x("INSERT INTO schedule_item VALUES ('groups/to-1', 's1-past', ?, 1, ?)",
      [T0, json.dumps({**item, "occurrence_id": "s1-past", "start_at": T0})])
    x("INSERT INTO occurrence_status VALUES ('s1-past', 'done', ?)", [T0])
    x("INSERT INTO outbox (id, topic, payload, qos, created_at) VALUES ('ev-1', 'thanthien/v1/p/devices/loa-1/events', "
      "?, 1, ?)", [b'{"id": "ev-1", "type": "play_finished"}', T0])
    x("INSERT INTO media VALUES (?, 1000, ?)", ["cd" * 32, T0])
    db.conn.close()
    return item


def test_agent_database_of_the_previous_release_upgrades(tmp_path):
    from devices.agent.store import MIGRATIONS, AgentStore

    path = tmp_path / "agent.db"
    item = build_old_agent(path)
    with AgentStore(path) as store:
        names = [r[0] for r in store.db.execute("SELECT name FROM migrations ORDER BY name")]
        assert names == sorted(n for n, _ in MIGRATIONS)
        assert store.get("volume") == 55 and store.get("schedule_versions") == {"groups/to-1": 7}
        pending = store.pending_occurrences()
        assert [(oid, start) for oid, start, _ in pending] == [("s1-future", item["start_at"])]
        assert store.occurrence_status("s1-past") == "done"
        assert store.scheduled_media() == {"cd" * 32}
        rows = store.outbox_peek()
        assert [(r.id, r.qos) for r in rows] == [("ev-1", 1)] and b"play_finished" in rows[0].payload
        assert store.media_lru() == [("cd" * 32, 1000)]
        store.outbox_remove([rows[0].seq])  # and it keeps working
        assert store.outbox_count() == 0
    fresh = tmp_path / "fresh.db"
    AgentStore(fresh).close()
    assert schema(path) == schema(fresh)

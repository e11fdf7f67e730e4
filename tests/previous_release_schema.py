"""The database schemas of the previous release (commit 1cd9d5f), frozen for the upgrade tests.

Copied verbatim from `git show 1cd9d5f:broadcast/db.py` and `…:devices/agent/store.py`
(tests/test_upgrade.py checks that they still match when the git history is at hand).
A machine in the field has exactly these tables; the current code must migrate them.
"""

RELEASE = "1cd9d5f"

STATION_MIGRATIONS: list[tuple[str, str]] = [
    ("001_initial", """
        CREATE TABLE users (
            username TEXT PRIMARY KEY,
            role TEXT NOT NULL CHECK (role IN ('operator','approver','technician','viewer','admin')),
            display_name TEXT NOT NULL,
            password_hash TEXT,
            created_at INTEGER NOT NULL
        );
        CREATE TABLE groups (
            code TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            lat REAL, lon REAL,
            quiet_start TEXT, quiet_end TEXT,
            created_at INTEGER NOT NULL
        );
        CREATE TABLE devices (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            location TEXT,
            lat REAL, lon REAL,
            volume INTEGER NOT NULL DEFAULT 70,
            max_volume INTEGER NOT NULL DEFAULT 100,
            emergency_volume INTEGER NOT NULL DEFAULT 100,
            warmup_ms INTEGER NOT NULL DEFAULT 1500,
            tail_ms INTEGER NOT NULL DEFAULT 2000,
            config_version INTEGER NOT NULL DEFAULT 0,
            created_at INTEGER NOT NULL
        );
        CREATE TABLE device_groups (
            device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
            group_code TEXT NOT NULL REFERENCES groups(code) ON DELETE CASCADE,
            PRIMARY KEY (device_id, group_code)
        );
        CREATE TABLE media (
            sha256 TEXT PRIMARY KEY,
            filename TEXT NOT NULL,
            format TEXT NOT NULL,
            bytes INTEGER NOT NULL,
            duration_ms INTEGER NOT NULL,
            sample_rate INTEGER NOT NULL,
            channels INTEGER NOT NULL,
            source TEXT NOT NULL,
            created_at INTEGER NOT NULL
        );
        CREATE TABLE bulletins (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            title TEXT NOT NULL,
            level TEXT NOT NULL CHECK (level IN ('normal','priority','emergency')),
            text TEXT,
            media_sha256 TEXT REFERENCES media(sha256),
            audio_sha256 TEXT REFERENCES media(sha256),
            audio_fallback INTEGER NOT NULL DEFAULT 0,
            chime INTEGER NOT NULL DEFAULT 0,
            author TEXT NOT NULL,
            state TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL
        );
        CREATE TABLE audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at INTEGER NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            object_type TEXT NOT NULL,
            object_id TEXT NOT NULL,
            detail TEXT
        );
        CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
        CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
        CREATE TABLE schedules (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            bulletin_id INTEGER REFERENCES bulletins(id),
            kind TEXT NOT NULL CHECK (kind IN ('play','relay')),
            rrule TEXT,
            dtstart INTEGER NOT NULL,
            valid_until INTEGER,
            repeat INTEGER NOT NULL DEFAULT 1,
            targets TEXT NOT NULL,
            relay_url TEXT,
            relay_minutes INTEGER,
            priority INTEGER NOT NULL,
            active INTEGER NOT NULL DEFAULT 1,
            created_by TEXT NOT NULL,
            created_at INTEGER NOT NULL
        );
        CREATE TABLE occurrences (
            id TEXT PRIMARY KEY,
            schedule_id INTEGER NOT NULL REFERENCES schedules(id),
            bulletin_id INTEGER,
            start_at INTEGER NOT NULL,
            end_at INTEGER,
            priority INTEGER NOT NULL,
            cancelled INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX occurrences_start ON occurrences (start_at);
        CREATE TABLE occurrence_devices (
            occurrence_id TEXT NOT NULL REFERENCES occurrences(id),
            device_id TEXT NOT NULL,
            PRIMARY KEY (occurrence_id, device_id)
        );
        CREATE TABLE documents (
            target TEXT PRIMARY KEY,
            version INTEGER NOT NULL,
            digest TEXT NOT NULL,
            published_at INTEGER NOT NULL
        );
        CREATE TABLE device_documents (
            device_id TEXT NOT NULL,
            target TEXT NOT NULL,
            version INTEGER NOT NULL,
            at INTEGER NOT NULL,
            PRIMARY KEY (device_id, target)
        );
        CREATE TABLE device_state (
            device_id TEXT PRIMARY KEY,
            online INTEGER NOT NULL,
            since INTEGER NOT NULL,
            last_seen INTEGER NOT NULL,
            version TEXT,
            telemetry TEXT
        );
        CREATE TABLE status_history (
            device_id TEXT NOT NULL,
            online INTEGER NOT NULL,
            at INTEGER NOT NULL
        );
        CREATE INDEX status_history_device ON status_history (device_id, at);
        CREATE TABLE events (
            id TEXT PRIMARY KEY,
            device_id TEXT NOT NULL,
            type TEXT NOT NULL,
            at INTEGER NOT NULL,
            occurrence_id TEXT,
            broadcast_id TEXT,
            started_at INTEGER,
            ended_at INTEGER,
            duration_ms INTEGER,
            volume INTEGER,
            reason TEXT,
            received_at INTEGER NOT NULL
        );
        CREATE INDEX events_occurrence ON events (occurrence_id, device_id);
        CREATE TABLE acks (
            cmd_id TEXT NOT NULL,
            device_id TEXT NOT NULL,
            status TEXT NOT NULL,
            reason TEXT,
            at INTEGER NOT NULL
        );
        CREATE INDEX acks_cmd ON acks (cmd_id);
    """),
    ("002_alerts", """
        CREATE TABLE alerts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            device_id TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('offline','clock','play_failures')),
            opened_at INTEGER NOT NULL,
            closed_at INTEGER,
            detail TEXT
        );
        CREATE INDEX alerts_open ON alerts (device_id, kind, closed_at);
    """),
]


AGENT_MIGRATIONS: list[tuple[str, str]] = [
    ("001_initial", """
        CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE schedule_item (
            source TEXT NOT NULL,            -- 'devices/<id>' or 'groups/<id>'
            occurrence_id TEXT NOT NULL,
            start_at INTEGER NOT NULL,
            priority INTEGER NOT NULL,
            item TEXT NOT NULL,              -- the ScheduleItem as JSON
            PRIMARY KEY (source, occurrence_id)
        );
        CREATE INDEX schedule_item_start ON schedule_item (start_at);
        CREATE TABLE occurrence_status (
            occurrence_id TEXT PRIMARY KEY,
            status TEXT NOT NULL,            -- fired, done, missed, failed, interrupted
            updated_at INTEGER NOT NULL
        );
        CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            topic TEXT NOT NULL,
            payload BLOB NOT NULL,
            qos INTEGER NOT NULL DEFAULT 1,
            created_at INTEGER NOT NULL
        );
        CREATE TABLE media (
            sha256 TEXT PRIMARY KEY,
            bytes INTEGER NOT NULL,
            last_used INTEGER NOT NULL
        );
    """),
]

"""The station's SQLite database: one file, one owning process, WAL, recorded migrations.

Small composable functions elsewhere take a ``Database`` (sqlite-utils); this module
only opens it and keeps its schema current. The audit log is append-only: triggers
refuse any UPDATE or DELETE on it.
"""

from __future__ import annotations

from pathlib import Path

import sqlite_utils

from devices.sqlite import connect, now_ms, transaction  # noqa: F401 (re-exported for the station)
from devices.sqlite import migrate as apply_migrations

MIGRATIONS: list[tuple[str, str]] = [
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
    ("003_console_kiosk", """
        CREATE TABLE web_sessions (
            id_sha256 TEXT PRIMARY KEY,
            username TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
            csrf TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            ip TEXT
        );
        CREATE TABLE api_tokens (
            token_sha256 TEXT PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('kiosk','user')),
            subject TEXT NOT NULL,
            label TEXT,
            created_at INTEGER NOT NULL,
            revoked_at INTEGER
        );
        CREATE INDEX api_tokens_subject ON api_tokens (kind, subject);
        CREATE TABLE commands (
            cmd_id TEXT PRIMARY KEY,
            type TEXT NOT NULL,
            target TEXT NOT NULL,
            occurrence_id TEXT,
            actor TEXT NOT NULL,
            sent_at INTEGER NOT NULL
        );
        CREATE INDEX commands_occurrence ON commands (occurrence_id);
        CREATE TABLE telemetry_history (
            device_id TEXT NOT NULL,
            at INTEGER NOT NULL,
            telemetry TEXT NOT NULL
        );
        CREATE INDEX telemetry_history_device ON telemetry_history (device_id, at);
        CREATE TABLE kiosk_ratings (
            uuid TEXT PRIMARY KEY,
            kiosk_id TEXT NOT NULL,
            created_ms INTEGER NOT NULL,
            counter_id TEXT NOT NULL,
            level INTEGER NOT NULL CHECK (level BETWEEN 1 AND 5),
            source TEXT NOT NULL,
            officer_id TEXT,
            procedure_code TEXT,
            field TEXT,
            f_access INTEGER, f_procedures INTEGER, f_officers INTEGER, f_results INTEGER, f_feedback INTEGER,
            reasons TEXT,
            comment TEXT,
            received_at INTEGER NOT NULL
        );
        CREATE INDEX kiosk_ratings_created ON kiosk_ratings (created_ms);
        CREATE TABLE kiosk_feedback (
            uuid TEXT PRIMARY KEY,
            kiosk_id TEXT NOT NULL,
            created_ms INTEGER NOT NULL,
            counter_id TEXT NOT NULL,
            category TEXT NOT NULL,
            text TEXT NOT NULL,
            phone TEXT,
            name TEXT,
            received_at INTEGER NOT NULL
        );
        CREATE INDEX kiosk_feedback_created ON kiosk_feedback (created_ms);
        CREATE TABLE kiosk_catalogue (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            version TEXT NOT NULL,
            body TEXT NOT NULL,
            procedures INTEGER NOT NULL,
            updated_at INTEGER NOT NULL
        );
        CREATE INDEX events_device_type ON events (device_id, type, at);
        CREATE INDEX audit_at ON audit (at);
    """),
]


def open_db(path: Path | str) -> sqlite_utils.Database:
    """Open (creating if needed) and migrate the station database."""
    db = connect(path, "the station database")
    migrate(db)
    return db


def migrate(db: sqlite_utils.Database) -> list[str]:
    """Apply the station's missing migrations; returns the names applied now."""
    return apply_migrations(db, MIGRATIONS)

"""The kiosk's one SQLite file: catalogue, ratings, feedback, outbox state, announcements.

Ratings and feedback rows *are* the outbox: a row with ``synced_at IS NULL`` has not
been acknowledged by the station. Writes use synchronous=FULL (devices.sqlite), so a
row is on disk when the insert's transaction returns.
"""

from __future__ import annotations

from pathlib import Path

import sqlite_utils

from devices.sqlite import connect, migrate

MIGRATIONS: list[tuple[str, str]] = [
    ("001_initial", """
        CREATE TABLE procedures (
            code TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            field TEXT NOT NULL DEFAULT '',
            level TEXT NOT NULL DEFAULT '',
            data TEXT NOT NULL,
            name_key TEXT NOT NULL,
            body_key TEXT NOT NULL,
            source TEXT NOT NULL DEFAULT '',
            updated_at INTEGER NOT NULL
        );
        CREATE INDEX procedures_field ON procedures(field);
        CREATE TABLE ratings (
            uuid TEXT PRIMARY KEY,
            created_ms INTEGER NOT NULL,
            kiosk_id TEXT NOT NULL,
            counter_id TEXT NOT NULL,
            level INTEGER NOT NULL CHECK (level BETWEEN 1 AND 5),
            source TEXT NOT NULL CHECK (source IN ('button','screen')),
            officer_id TEXT,
            procedure_code TEXT,
            field TEXT,
            factors TEXT NOT NULL DEFAULT '{}',
            reasons TEXT NOT NULL DEFAULT '[]',
            comment TEXT,
            open_until INTEGER NOT NULL DEFAULT 0,
            synced_at INTEGER
        );
        CREATE INDEX ratings_unsynced ON ratings(synced_at) WHERE synced_at IS NULL;
        CREATE INDEX ratings_created ON ratings(created_ms);
        CREATE TABLE feedback (
            uuid TEXT PRIMARY KEY,
            created_ms INTEGER NOT NULL,
            kiosk_id TEXT NOT NULL,
            counter_id TEXT NOT NULL,
            category TEXT NOT NULL CHECK (category IN ('gop_y','phan_anh')),
            text TEXT NOT NULL,
            phone TEXT,
            name TEXT,
            synced_at INTEGER
        );
        CREATE TABLE sync_state (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL,
            updated_at INTEGER NOT NULL
        );
        CREATE TABLE announcements (
            id INTEGER PRIMARY KEY,
            title TEXT NOT NULL,
            text TEXT NOT NULL,
            level TEXT NOT NULL,
            created_ms INTEGER NOT NULL
        );
    """),
]


def open_db(path: Path | str) -> sqlite_utils.Database:
    db = connect(path, "kiosk database")
    migrate(db, MIGRATIONS)
    return db


def database_path(data_dir: Path) -> Path:
    return Path(data_dir) / "kiosk.sqlite"

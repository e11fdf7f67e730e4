"""The node's durable state in one SQLite file (WAL, synchronous=FULL).

What must survive a power cut lives here: the merged schedule and what became of each
occurrence, the outbox of events not yet acknowledged by the broker, the volume, the
document versions held, and the media cache index. One connection, serialised by a
lock: a node has few writes and they must each be durable before anything is said.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..sqlite import connect, migrate, now_ms, transaction

MIGRATIONS: list[tuple[str, str]] = [
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


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    id: str
    topic: str
    payload: bytes
    qos: int


class AgentStore:
    """Small composable operations over the node's database."""

    def __init__(self, path: Path | str):
        self.path = Path(path) if str(path) != ":memory:" else None
        self.db = connect(path, "the node database")
        self._lock = threading.RLock()
        with self._lock:
            migrate(self.db, MIGRATIONS)

    def _tx(self) -> transaction:
        return transaction(self.db, self._lock)

    def close(self) -> None:
        with self._lock:
            self.db.conn.close()

    def __enter__(self) -> "AgentStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- key/value state ------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        with self._lock:
            row = self.db.execute("SELECT value FROM state WHERE key = ?", [key]).fetchone()
        return default if row is None else json.loads(row[0])

    def put(self, key: str, value: Any) -> None:
        with self._tx():
            self.db.execute("INSERT INTO state (key, value) VALUES (?, ?) "
                            "ON CONFLICT(key) DO UPDATE SET value = excluded.value", [key, json.dumps(value)])

    # --- schedule ---------------------------------------------------------------------

    def replace_schedule(self, source: str, version: int, items: Iterable[tuple[str, int, int, str]]) -> None:
        """Atomically swap one source's items (id, start_at, priority, json) and its version."""
        with self._tx():
            self.db.execute("DELETE FROM schedule_item WHERE source = ?", [source])
            self.db.conn.executemany(
                "INSERT INTO schedule_item (source, occurrence_id, start_at, priority, item) VALUES (?, ?, ?, ?, ?)",
                [(source, oid, start, prio, item) for oid, start, prio, item in items])
            versions = self.get("schedule_versions", {})
            versions[source] = version
            self.db.execute("INSERT INTO state (key, value) VALUES ('schedule_versions', ?) "
                            "ON CONFLICT(key) DO UPDATE SET value = excluded.value", [json.dumps(versions)])

    def drop_source(self, source: str) -> None:
        """Forget a group's schedule (the node left the group)."""
        with self._tx():
            self.db.execute("DELETE FROM schedule_item WHERE source = ?", [source])
            versions = self.get("schedule_versions", {})
            versions.pop(source, None)
            self.db.execute("INSERT INTO state (key, value) VALUES ('schedule_versions', ?) "
                            "ON CONFLICT(key) DO UPDATE SET value = excluded.value", [json.dumps(versions)])

    def pending_occurrences(self, until_ms: int | None = None) -> list[tuple[str, int, str]]:
        """(occurrence_id, start_at, item json) not yet fired, earliest first, one per id."""
        sql = ("SELECT s.occurrence_id, MIN(s.start_at), s.item FROM schedule_item s "
               "LEFT JOIN occurrence_status o ON o.occurrence_id = s.occurrence_id "
               "WHERE o.occurrence_id IS NULL ")
        args: list[Any] = []
        if until_ms is not None:
            sql += "AND s.start_at <= ? "
            args.append(until_ms)
        sql += "GROUP BY s.occurrence_id ORDER BY MIN(s.start_at), MAX(s.priority) DESC"
        with self._lock:
            return [tuple(r) for r in self.db.execute(sql, args).fetchall()]

    def mark_occurrence(self, occurrence_id: str, status: str) -> bool:
        """Record what became of an occurrence; False if it was already marked fired/done."""
        with self._tx():
            cur = self.db.execute(
                "INSERT INTO occurrence_status (occurrence_id, status, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(occurrence_id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at",
                [occurrence_id, status, now_ms()])
            return cur.rowcount > 0

    def occurrence_status(self, occurrence_id: str) -> str | None:
        with self._lock:
            row = self.db.execute("SELECT status FROM occurrence_status WHERE occurrence_id = ?",
                                  [occurrence_id]).fetchone()
        return row[0] if row else None

    def scheduled_media(self) -> set[str]:
        """sha256 of every media item a pending occurrence needs (never evicted)."""
        out = set()
        for _oid, _start, item in self.pending_occurrences():
            media = json.loads(item).get("media")
            if media:
                out.add(media["sha256"])
        return out

    def prune_occurrences(self, before_ms: int) -> None:
        with self._tx():
            self.db.execute("DELETE FROM occurrence_status WHERE updated_at < ? AND occurrence_id NOT IN "
                            "(SELECT occurrence_id FROM schedule_item)", [before_ms])

    # --- outbox -----------------------------------------------------------------------

    def outbox_add(self, event_id: str, topic: str, payload: bytes, qos: int = 1) -> None:
        with self._tx():
            self.db.execute("INSERT OR IGNORE INTO outbox (id, topic, payload, qos, created_at) VALUES (?, ?, ?, ?, ?)",
                            [event_id, topic, payload, qos, now_ms()])

    def outbox_peek(self, limit: int = 50) -> list[OutboxRow]:
        with self._lock:
            rows = self.db.execute("SELECT seq, id, topic, payload, qos FROM outbox ORDER BY seq LIMIT ?",
                                   [limit]).fetchall()
        return [OutboxRow(r[0], r[1], r[2], bytes(r[3]), r[4]) for r in rows]

    def outbox_remove(self, seqs: Iterable[int]) -> None:
        seqs = list(seqs)
        if not seqs:
            return
        with self._tx():
            self.db.conn.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])

    def outbox_count(self) -> int:
        with self._lock:
            return self.db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    # --- media index ------------------------------------------------------------------

    def media_touch(self, sha256: str, size: int) -> None:
        with self._tx():
            self.db.execute("INSERT INTO media (sha256, bytes, last_used) VALUES (?, ?, ?) "
                            "ON CONFLICT(sha256) DO UPDATE SET last_used = excluded.last_used, bytes = excluded.bytes",
                            [sha256, size, now_ms()])

    def media_forget(self, sha256: str) -> None:
        with self._tx():
            self.db.execute("DELETE FROM media WHERE sha256 = ?", [sha256])

    def media_lru(self) -> list[tuple[str, int]]:
        """(sha256, bytes), least recently used first."""
        with self._lock:
            return [tuple(r) for r in self.db.execute("SELECT sha256, bytes FROM media ORDER BY last_used").fetchall()]

    def media_bytes(self) -> int:
        with self._lock:
            return self.db.execute("SELECT COALESCE(SUM(bytes), 0) FROM media").fetchone()[0]

"""SQLite the same way in every role: WAL, synchronous=FULL, recorded migrations, and
transactions that are on disk when they exit."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import sqlite_utils

from .errors import StorageError


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def connect(path: Path | str, what: str) -> sqlite_utils.Database:
    """Open (creating the folder if needed) with the project's pragmas; StorageError names ``what``."""
    try:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open {what} {path}: {exc}") from exc
    return sqlite_utils.Database(conn)


def migrate(db: sqlite_utils.Database, migrations: list[tuple[str, str]]) -> list[str]:
    """Apply missing migrations in order, each in its own transaction; returns those applied."""
    db.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at INTEGER NOT NULL)")
    done = {r[0] for r in db.execute("SELECT name FROM migrations").fetchall()}
    applied = []
    for name, sql in migrations:
        if name in done:
            continue
        with transaction(db):
            for stmt in statements(sql):
                db.execute(stmt)
            db.execute("INSERT INTO migrations VALUES (?, ?)", [name, now_ms()])
        applied.append(name)
    return applied


def statements(sql: str) -> list[str]:
    """Split on ';' outside trigger bodies (BEGIN … END)."""
    out, buf, depth = [], [], 0
    for token in sql.replace(";", ";\x00").split("\x00"):
        buf.append(token)
        upper = token.upper()
        depth += upper.count(" BEGIN ") - upper.count(" END;")
        if depth <= 0 and token.strip().endswith(";"):
            stmt = "".join(buf).strip().rstrip(";")
            if stmt:
                out.append(stmt)
            buf, depth = [], 0
    rest = "".join(buf).strip().rstrip(";")
    if rest:
        out.append(rest)
    return out


class transaction:
    """BEGIN IMMEDIATE … COMMIT (ROLLBACK on error), optionally under a lock; nests."""

    def __init__(self, db: sqlite_utils.Database, lock: threading.RLock | None = None):
        self.conn = db.conn
        self.lock = lock
        self._outer = False

    def __enter__(self) -> sqlite3.Connection:
        if self.lock is not None:
            self.lock.acquire()
        self._outer = not self.conn.in_transaction
        if self._outer:
            self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb):
        try:
            if self._outer:
                self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
        except sqlite3.Error as err:
            raise StorageError(f"database write failed: {err}") from err
        finally:
            if self.lock is not None:
                self.lock.release()
        if isinstance(exc, sqlite3.Error):
            raise StorageError(f"database write failed: {exc}") from exc
        return False

"""Daily SQLite backups with the online backup API, kept for a number of days."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import sqlite_utils

from devices.errors import StorageError


def backup_now(db: sqlite_utils.Database, directory: Path, keep_days: int) -> Path:
    """Copy the live database consistently (no lock held for long), then prune old copies."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = directory / f"station-{stamp}.db"
    tmp = target.with_suffix(".part")
    try:
        dest = sqlite3.connect(tmp)
        with dest:
            db.conn.backup(dest, pages=1024)
        dest.close()
        tmp.rename(target)
    except sqlite3.Error as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"backup to {target} failed: {exc}") from exc
    cutoff = dt.datetime.now() - dt.timedelta(days=keep_days)
    for old in directory.glob("station-*.db"):
        try:
            when = dt.datetime.strptime(old.stem.removeprefix("station-"), "%Y%m%d-%H%M%S")
        except ValueError:
            continue
        if when < cutoff:
            old.unlink(missing_ok=True)
    return target


def check_backup(path: Path) -> int:
    """Refuse a file that is not a sound station database; returns its number of migrations."""
    path = Path(path)
    if not path.is_file():
        raise StorageError(f"{path}: no such backup")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            result = conn.execute("PRAGMA integrity_check").fetchone()[0]
            if result != "ok":
                raise StorageError(f"{path} is damaged: {result}")
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not {"migrations", "devices", "events", "audit"} <= tables:
                raise StorageError(f"{path} is not a station database")
            return conn.execute("SELECT COUNT(*) FROM migrations").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise StorageError(f"{path} is not a usable SQLite database: {exc}") from exc


def restore(backup: Path, db_path: Path) -> Path | None:
    """Put a backup in place of the station database; the station must be stopped.

    The backup is checked first (integrity, station tables); it is copied next to the
    database with the backup API and renamed over it, so a failure leaves the current
    database as it was. The replaced database (with its WAL folded in) is kept as
    ``station.db.before-restore-<time>``; returns that path (None when there was none).
    Migrations newer than the backup apply when the station next opens it.
    """
    backup, db_path = Path(backup), Path(db_path)
    check_backup(backup)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = db_path.with_name(db_path.name + ".restoring")
    tmp.unlink(missing_ok=True)
    try:
        src = sqlite3.connect(f"file:{backup}?mode=ro", uri=True)
        dest = sqlite3.connect(tmp)
        with dest:
            src.backup(dest)
        dest.close()
        src.close()
    except sqlite3.Error as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"restore from {backup} failed: {exc}") from exc
    kept = None
    if db_path.exists():
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        kept = db_path.with_name(f"{db_path.name}.before-restore-{stamp}")
        try:  # fold the WAL in, so the kept copy is complete on its own
            old = sqlite3.connect(db_path)
            old.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            old.close()
        except sqlite3.Error as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"cannot read the current database {db_path}: {exc}") from exc
        db_path.rename(kept)
    for suffix in ("-wal", "-shm"):
        Path(str(db_path) + suffix).unlink(missing_ok=True)
    tmp.rename(db_path)
    return kept

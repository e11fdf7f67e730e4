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

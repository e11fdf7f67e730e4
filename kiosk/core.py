"""The kiosk's logic in one object the screens, the GPIO buttons and the sync loop share.

No Kivy here: tests and the CLI use it directly. Every database write goes through one
lock, because the GPIO thread, the UI thread and the sync thread share one connection.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from devices.sqlite import now_ms

from . import catalogue, ratings
from .config import KioskConfig
from .db import database_path, open_db
from .search import Hit, SearchIndex

log = logging.getLogger("thanthien.kiosk")


class Kiosk:
    def __init__(self, config: KioskConfig, *, db_path: Path | str | None = None):
        self.config = config
        self.db = open_db(db_path or database_path(config.data_dir))
        self.lock = threading.RLock()
        self.origin = ratings.Origin(config.kiosk_id, config.counter_id)
        self._index: SearchIndex | None = None
        self.listeners: list = []  # called with (event, data) after ratings/imports; UI hooks in
        if config.catalogue and self.procedure_count() == 0 and Path(config.catalogue).exists():
            self.import_catalogue(Path(config.catalogue))

    # -- catalogue ---------------------------------------------------------------------
    def procedure_count(self) -> int:
        return self.db.execute("SELECT count(*) FROM procedures").fetchone()[0]

    def import_catalogue(self, path: Path) -> dict[str, int]:
        procedures = catalogue.read_file(path)      # parse everything before touching the db
        return self.import_procedures(procedures, Path(path).name)

    def import_procedures(self, procedures: list[catalogue.Procedure], source: str) -> dict[str, int]:
        with self.lock:
            result = catalogue.store(self.db, procedures, source=source)
            self._index = None
        self._notify("catalogue", result)
        return result

    @property
    def index(self) -> SearchIndex:
        with self.lock:
            if self._index is None:
                self._index = SearchIndex.from_db(self.db)
            return self._index

    def search(self, query: str, *, field: str | None = None, limit: int = 50) -> list[Hit]:
        return self.index.search(query, field=field, limit=limit)

    def procedure(self, code: str) -> catalogue.Procedure | None:
        with self.lock:
            return catalogue.get(self.db, code)

    def fields(self) -> list[tuple[str, int]]:
        with self.lock:
            return catalogue.fields(self.db)

    def in_field(self, field: str) -> list[dict]:
        with self.lock:
            return catalogue.in_field(self.db, field)

    # -- answers -----------------------------------------------------------------------
    def rate(self, level: int, source: ratings.Source | str, *, follow_up: bool = False, **details) -> str:
        """Durable before it returns: the caller may now say "Cảm ơn"."""
        with self.lock:
            uid = ratings.record_rating(self.db, self.origin, level, source, follow_up=follow_up, **details)
        self._notify("rating", {"uuid": uid, "level": level, "source": str(source)})
        return uid

    def finish_rating(self, uid: str, **details) -> None:
        with self.lock:
            ratings.finish_rating(self.db, uid, **details)

    def release_rating(self, uid: str) -> None:
        with self.lock:
            ratings.release_rating(self.db, uid)

    def feedback(self, category: str, text, *, phone=None, name=None) -> str:
        with self.lock:
            uid = ratings.record_feedback(self.db, self.origin, category, text, phone=phone, name=name)
        self._notify("feedback", {"uuid": uid})
        return uid

    def satisfaction(self, by: str, month: str | None = None) -> list[ratings.Share]:
        labels = {o.id: o.name for o in self.config.officers}
        with self.lock:
            return ratings.satisfaction(self.db, by, month=month, labels=labels,
                                        target_pct=self.config.satisfaction_target_pct)

    # -- announcements from the station ---------------------------------------------------
    def announcements(self, limit: int = 5) -> list[dict]:
        with self.lock:
            rows = self.db.execute("SELECT id, title, text, level, created_ms FROM announcements"
                                   " ORDER BY created_ms DESC LIMIT ?", [limit]).fetchall()
        return [dict(zip(("id", "title", "text", "level", "created_ms"), r)) for r in rows]

    def state(self, key: str) -> str | None:
        with self.lock:
            row = self.db.execute("SELECT value FROM sync_state WHERE key=?", [key]).fetchone()
        return row[0] if row else None

    def set_state(self, key: str, value: str) -> None:
        with self.lock:
            self.db.execute("INSERT INTO sync_state (key, value, updated_at) VALUES (?,?,?)"
                            " ON CONFLICT(key) DO UPDATE SET value=excluded.value, updated_at=excluded.updated_at",
                            [key, value, now_ms()])

    def _notify(self, event: str, data: dict) -> None:
        for listener in list(self.listeners):
            try:
                listener(event, data)
            except Exception:  # noqa: BLE001 - a screen bug must not lose the answer
                log.exception("kiosk listener failed on %s", event)

    def close(self) -> None:
        with self.lock:
            self.db.conn.close()

    def __enter__(self) -> "Kiosk":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

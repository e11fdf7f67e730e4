"""Offline-first sync with the station (contract: docs/kiosk-api.md).

The outbox is the ratings and feedback tables themselves. A batch leaves the outbox
only when the station names its uuids as accepted or duplicate, so a kiosk that is
cut off for days loses nothing, and one that loses a response sends the batch again
without creating duplicates. Failures back off exponentially with jitter.
"""

from __future__ import annotations

import enum
import json
import logging
import random
import threading
import time
from dataclasses import dataclass

import requests

from devices.errors import ThanthienError
from devices.sqlite import transaction

from . import catalogue, ratings
from .core import Kiosk

log = logging.getLogger("thanthien.kiosk.sync")
BATCH = 500
BACKOFF_START_S, BACKOFF_MAX_S, JITTER = 2.0, 900.0, 0.2


class SyncError(ThanthienError, RuntimeError):
    """Sync cannot run as configured (no station URL, unreadable token)."""


class SyncStatus(enum.StrEnum):
    NEVER = "never"
    OK = "ok"
    OFFLINE = "offline"          # connection refused, timeout, 5xx: retried with backoff
    UNAUTHORIZED = "unauthorized"  # 401/403: waits for a new token
    REFUSED = "refused"          # 422: the batch is parked with the station's reason


@dataclass
class Backoff:
    delay: float = BACKOFF_START_S

    def failed(self) -> float:
        wait = self.delay * random.uniform(1 - JITTER, 1 + JITTER)
        self.delay = min(BACKOFF_MAX_S, self.delay * 2)
        return wait

    def reset(self) -> None:
        self.delay = BACKOFF_START_S


class StationSync:
    def __init__(self, kiosk: Kiosk, base_url: str, token: str, *, interval_s: float = 30, timeout_s: float = 10):
        self.kiosk = kiosk
        self.base = base_url.rstrip("/")
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.session = requests.Session()
        self.session.headers.update({"Authorization": f"Bearer {token}", "User-Agent": "thanthien-kiosk"})
        self.backoff = Backoff()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_config(cls, kiosk: Kiosk) -> "StationSync":
        link = kiosk.config.station
        if not link.url:
            raise SyncError("no [station] url in the config; the kiosk works offline only")
        if not link.token_file:
            raise SyncError("no [station] token_file in the config; issue one with `thanthien station kiosk-token add`")
        try:
            token = link.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SyncError(f"[station] token_file {link.token_file}: {exc.strerror}") from None
        if not token or len(token) > 512 or not token.isprintable():
            raise SyncError(f"[station] token_file {link.token_file}: holds no usable token")
        return cls(kiosk, link.url, token, interval_s=link.sync_interval_s)

    # -- one round -----------------------------------------------------------------------
    def run_once(self) -> dict:
        """Upload everything pending, then pull announcements and the catalogue."""
        report: dict = {"ok": False, "sent": 0, "outbox": None}
        try:
            report["sent"] = self.upload()
            report["announcements"] = self.pull_announcements()
            report["catalogue"] = self.pull_catalogue()
            report["ok"] = True
            self._status(SyncStatus.OK, "")
        except _Stop as stop:
            self._status(stop.status, stop.detail)
            report.update(status=stop.status.value, error=stop.detail)
        except requests.RequestException as exc:
            self._status(SyncStatus.OFFLINE, type(exc).__name__)
            report.update(status=SyncStatus.OFFLINE.value, error=str(exc)[:200])
        with self.kiosk.lock:
            report["outbox"] = ratings.outbox_size(self.kiosk.db)
        return report

    def upload(self) -> int:
        sent = 0
        while True:
            with self.kiosk.lock:
                items = ratings.pending_items(self.kiosk.db, BATCH)
            if not items:
                return sent
            resp = self.session.post(f"{self.base}/api/v1/kiosk/submissions", timeout=self.timeout_s,
                                     json={"kiosk_id": self.kiosk.config.kiosk_id, "items": items})
            self._check(resp)
            body = resp.json()
            done = [u for u in body.get("accepted", []) + body.get("duplicates", []) if isinstance(u, str)]
            asked = {i["uuid"] for i in items}
            with self.kiosk.lock:
                ratings.mark_synced(self.kiosk.db, [u for u in done if u in asked])
            sent += len(done)
            if not asked & set(done):
                raise _Stop(SyncStatus.REFUSED, "the station acknowledged none of the batch")

    def pull_announcements(self) -> int:
        resp = self.session.get(f"{self.base}/api/v1/kiosk/announcements", timeout=self.timeout_s)
        self._check(resp)
        items = resp.json().get("announcements", [])
        with self.kiosk.lock, transaction(self.kiosk.db):
            self.kiosk.db.execute("DELETE FROM announcements")
            for a in items[:20]:
                if not isinstance(a, dict) or not isinstance(a.get("id"), int):
                    continue
                self.kiosk.db.execute("INSERT INTO announcements (id, title, text, level, created_ms) VALUES (?,?,?,?,?)",
                                      [a["id"], str(a.get("title", ""))[:300], str(a.get("text") or "")[:4000],
                                       str(a.get("level", "normal"))[:20], int(a.get("created_ms") or 0)])
        return len(items)

    def pull_catalogue(self) -> str:
        headers = {}
        etag = self.kiosk.state("catalogue_etag")
        if etag:
            headers["If-None-Match"] = etag
        resp = self.session.get(f"{self.base}/api/v1/kiosk/catalogue", timeout=self.timeout_s, headers=headers)
        if resp.status_code in (304, 404):
            return "unchanged" if resp.status_code == 304 else "none"
        self._check(resp)
        try:
            procedures = catalogue.parse_json(resp.content, "station catalogue")
        except catalogue.CatalogueError as exc:
            log.warning("station catalogue refused: %s", exc)
            return f"refused: {exc}"
        self.kiosk.import_procedures(procedures, "station")
        if resp.headers.get("ETag"):
            self.kiosk.set_state("catalogue_etag", resp.headers["ETag"])
        return f"{len(procedures)} procedures"

    def _check(self, resp: requests.Response) -> None:
        if resp.status_code in (401, 403):
            raise _Stop(SyncStatus.UNAUTHORIZED, f"HTTP {resp.status_code}: check the kiosk token")
        if resp.status_code == 422:
            try:
                detail = resp.json()
                detail = f"{detail.get('field')}: {detail.get('message')}"
            except ValueError:
                detail = resp.text[:200]
            raise _Stop(SyncStatus.REFUSED, detail)
        if resp.status_code >= 400:
            raise requests.HTTPError(f"HTTP {resp.status_code}", response=resp)

    def _status(self, status: SyncStatus, detail: str) -> None:
        self.kiosk.set_state("sync_status", json.dumps({"status": status.value, "detail": detail,
                                                        "at": int(time.time() * 1000)}))

    # -- the loop --------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="kiosk-sync", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """Sync soon (a new rating arrived); still subject to backoff."""
        self._wake.set()

    def _loop(self) -> None:
        wait = 0.0
        while not self._stop.is_set():
            self._wake.wait(wait)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                report = self.run_once()
            except Exception:  # noqa: BLE001 - the loop must survive anything
                log.exception("sync round failed")
                report = {"ok": False}
            if report.get("ok"):
                self.backoff.reset()
                wait = self.interval_s
            else:
                wait = self.backoff.failed()
                log.info("sync: %s; retry in %.0f s", report.get("error", "failed"), wait)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=5)
        self.session.close()


def status(kiosk: Kiosk) -> dict:
    raw = kiosk.state("sync_status")
    out = json.loads(raw) if raw else {"status": SyncStatus.NEVER.value, "detail": "", "at": 0}
    with kiosk.lock:
        out["outbox"] = ratings.outbox_size(kiosk.db)
    return out


class _Stop(Exception):
    def __init__(self, status: SyncStatus, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail

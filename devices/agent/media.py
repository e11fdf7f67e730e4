"""The node's media cache: fetched ahead of time, verified, bounded, never garbage.

A file is trusted only under its final name ``<sha256>``, which it gets by an atomic
rename after its size and hash were checked and it decoded as audio. A download in
progress lives in ``.<sha256>.part`` and is deleted at start-up, so a kill -9 halfway
leaves nothing that is later played. The cache is bounded in bytes; eviction is least
recently used, and media that a pending occurrence needs is never evicted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
import time
from pathlib import Path
from typing import Callable

from ..errors import DecodeError, MediaError, MediaIntegrityError
from ..protocol import MediaRef
from .store import AgentStore

log = logging.getLogger(__name__)

CHUNK = 64 * 1024


class MediaCache:
    def __init__(self, directory: Path, store: AgentStore, *, max_bytes: int, max_media_bytes: int,
                 timeout_s: float = 60.0, retries: int = 4, validate: Callable[[Path], None] | None = None,
                 session=None):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.store = store
        self.max_bytes = max_bytes
        self.max_media_bytes = max_media_bytes
        self.timeout_s = timeout_s
        self.retries = retries
        self.validate = validate
        self._session = session
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._clean_partial()

    @property
    def session(self):
        if self._session is None:
            import requests

            self._session = requests.Session()
        return self._session

    def _clean_partial(self) -> None:
        for p in self.dir.glob(".*.part"):
            p.unlink(missing_ok=True)
        # index entries whose file vanished (SD card trouble) are forgotten
        for sha, _size in self.store.media_lru():
            if not (self.dir / sha).exists():
                self.store.media_forget(sha)

    def path_for(self, sha256: str) -> Path:
        return self.dir / sha256

    def has(self, ref: MediaRef) -> bool:
        return self.path_for(ref.sha256).exists()

    def used_bytes(self) -> int:
        return self.store.media_bytes()

    def _lock_for(self, sha: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(sha, threading.Lock())

    def ensure(self, ref: MediaRef) -> Path:
        """Return the verified local file for ``ref``, downloading it if needed."""
        path = self.path_for(ref.sha256)
        with self._lock_for(ref.sha256):
            if path.exists():
                self.store.media_touch(ref.sha256, path.stat().st_size)
                return path
            if ref.bytes > self.max_media_bytes:
                raise MediaError(f"media is {ref.bytes} bytes, over this node's limit of {self.max_media_bytes}")
            self._make_room(ref.bytes)
            last: Exception | None = None
            for attempt in range(self.retries):
                try:
                    self._download(ref, path)
                    self.store.media_touch(ref.sha256, ref.bytes)
                    return path
                except MediaIntegrityError:
                    raise  # the station served other bytes: retrying will not help
                except DecodeError:
                    raise
                except MediaError as exc:
                    last = exc
                    if attempt + 1 < self.retries:
                        delay = min(30.0, 0.5 * 2 ** attempt) * random.uniform(0.5, 1.0)
                        log.warning("download of %s failed (%s); retry in %.1f s", ref.sha256[:12], exc, delay)
                        time.sleep(delay)
            raise MediaError(f"download failed after {self.retries} attempts: {last}")

    def _download(self, ref: MediaRef, final: Path) -> None:
        import requests

        part = self.dir / f".{ref.sha256}.part"
        digest = hashlib.sha256()
        size = 0
        try:
            with self.session.get(ref.url, stream=True, timeout=self.timeout_s) as resp:
                if resp.status_code != 200:
                    raise MediaError(f"HTTP {resp.status_code} for {ref.url}")
                with open(part, "wb") as f:
                    for chunk in resp.iter_content(CHUNK):
                        size += len(chunk)
                        if size > ref.bytes:
                            raise MediaIntegrityError(f"more than the announced {ref.bytes} bytes")
                        digest.update(chunk)
                        f.write(chunk)
                    f.flush()
                    os.fsync(f.fileno())
            if size != ref.bytes:
                raise MediaError(f"truncated download: {size} of {ref.bytes} bytes")
            if digest.hexdigest() != ref.sha256:
                raise MediaIntegrityError(f"sha256 mismatch: got {digest.hexdigest()[:16]}…, "
                                          f"expected {ref.sha256[:16]}…")
            if self.validate is not None:
                self.validate(part)
            os.replace(part, final)
            _fsync_dir(self.dir)
        except requests.RequestException as exc:
            raise MediaError(f"cannot fetch {ref.url}: {type(exc).__name__}") from None
        finally:
            part.unlink(missing_ok=True)

    def _make_room(self, incoming: int) -> None:
        protected = self.store.scheduled_media()
        used = self.store.media_bytes()
        for sha, size in self.store.media_lru():
            if used + incoming <= self.max_bytes:
                return
            if sha in protected:
                continue
            self.path_for(sha).unlink(missing_ok=True)
            self.store.media_forget(sha)
            used -= size
            log.info("evicted %s (%d bytes) from the media cache", sha[:12], size)
        if used + incoming > self.max_bytes:
            raise MediaError(f"media cache full: {used} bytes in use by scheduled media, limit {self.max_bytes}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

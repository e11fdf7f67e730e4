"""The station's media library: audio validated by decoding, stored by content hash, and
served to nodes over HTTP with Content-Length, ETag and Range.

Nothing is trusted from a file's name: the type is sniffed from its first bytes and the
file must decode (miniaudio) before it is accepted. Files are stored as
``<library>/<sha256>``, so a name can never reach outside the library.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from devices.errors import DecodeError, MediaError, ValidationError

from .db import now_ms, transaction

MAX_IMPORT_BYTES = 200 * 1024 * 1024
SHA_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class MediaInfo:
    sha256: str
    filename: str
    format: str
    bytes: int
    duration_ms: int
    sample_rate: int
    channels: int
    source: str


def sniff_format(head: bytes) -> str | None:
    """Audio container from magic bytes (never from the name)."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    return None


def probe(path: Path) -> tuple[str, int, int, int]:
    """(format, duration_ms, sample_rate, channels), or ValidationError in Vietnamese."""
    import miniaudio

    with open(path, "rb") as f:
        head = f.read(16)
    fmt = sniff_format(head)
    if fmt is None:
        raise ValidationError(["tệp: không phải âm thanh MP3, WAV, OGG hay FLAC — hãy chọn một tệp âm thanh"])
    # miniaudio chooses its decoder by extension: name a link after the sniffed format
    named = path.with_name(path.name + f".probe.{fmt}")
    try:
        os.link(path, named)
        info = miniaudio.get_file_info(str(named))
        # decode it all: a file whose header is fine but whose body is garbage must be refused
        decoded = miniaudio.decode_file(str(named), miniaudio.SampleFormat.SIGNED16, 1, 8000)
    except (miniaudio.DecodeError, miniaudio.MiniaudioError):
        raise ValidationError([f"tệp: không giải mã được âm thanh {fmt.upper()} — tệp hỏng hoặc sai định dạng"]) from None
    finally:
        named.unlink(missing_ok=True)
    frames = len(decoded.samples)
    if frames == 0:
        raise ValidationError(["tệp: không có âm thanh (độ dài 0 giây)"])
    return fmt, frames * 1000 // 8000, info.sample_rate, info.nchannels


class MediaLibrary:
    def __init__(self, db: sqlite_utils.Database, directory: Path, max_bytes: int = MAX_IMPORT_BYTES):
        self.db = db
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes

    def path_for(self, sha256: str) -> Path:
        if not SHA_RE.fullmatch(sha256 or ""):
            raise ValidationError([f"media id {sha256[:20]!r} is not a sha256"])
        return self.dir / sha256

    def import_file(self, src: Path | str, *, filename: str | None = None, source: str = "upload") -> MediaInfo:
        """Copy, hash, validate and register ``src``; the same content is stored once."""
        src = Path(src)
        try:
            size = src.stat().st_size
        except OSError as exc:
            raise ValidationError([f"tệp: không đọc được {src.name} ({exc.strerror})"]) from None
        if size > self.max_bytes:
            raise ValidationError([f"tệp: {size // (1024 * 1024)} MB, vượt giới hạn {self.max_bytes // (1024 * 1024)} MB"])
        with open(src, "rb") as f:
            return self.import_stream(f, filename=filename or src.name, source=source)

    def import_stream(self, stream, *, filename: str, source: str = "upload") -> MediaInfo:
        """Import from a binary stream, refusing it as soon as it passes the size cap."""
        digest = hashlib.sha256()
        fd, tmp_name = tempfile.mkstemp(dir=self.dir, prefix=".import-")
        tmp = Path(tmp_name)
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                while True:
                    chunk = stream.read(1024 * 1024)
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise ValidationError([f"tệp: vượt giới hạn {self.max_bytes // (1024 * 1024)} MB"])
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if size == 0:
                raise ValidationError(["tệp: tệp rỗng"])
            fmt, duration, rate, channels = probe(tmp)
            sha = digest.hexdigest()
            final = self.dir / sha
            if not final.exists():
                os.replace(tmp, final)
            clean_name = os.path.basename(filename.replace("\\", "/"))[:200] or f"{sha[:12]}.{fmt}"
            info = MediaInfo(sha, clean_name, fmt, size, duration, rate, channels, source)
            with transaction(self.db):
                self.db.execute("INSERT OR IGNORE INTO media VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                [sha, clean_name, fmt, size, duration, rate, channels, source, now_ms()])
            return self.get(sha)
        finally:
            tmp.unlink(missing_ok=True)

    def get(self, sha256: str) -> MediaInfo:
        row = self.db.execute("SELECT sha256, filename, format, bytes, duration_ms, sample_rate, channels, source "
                              "FROM media WHERE sha256 = ?", [sha256]).fetchone()
        if row is None:
            raise MediaError(f"no media {sha256[:12]} in the library")
        return MediaInfo(*row)

    def list(self) -> list[MediaInfo]:
        return [MediaInfo(*r) for r in self.db.execute(
            "SELECT sha256, filename, format, bytes, duration_ms, sample_rate, channels, source FROM media "
            "ORDER BY created_at DESC").fetchall()]


CONTENT_TYPES = {"mp3": "audio/mpeg", "wav": "audio/wav", "ogg": "audio/ogg", "flac": "audio/flac"}


def make_handler(library_dir: Path):
    """An HTTP handler serving GET/HEAD /media/<sha256> with ETag and single Range."""
    library_dir = Path(library_dir)

    class MediaHandler(http.server.BaseHTTPRequestHandler):
        server_version = "thanthien-media/1"

        def log_message(self, *args):
            pass

        def do_HEAD(self):
            self._serve(head=True)

        def do_GET(self):
            self._serve(head=False)

        def _serve(self, head: bool) -> None:
            m = re.fullmatch(r"/media/([0-9a-f]{64})", self.path.split("?", 1)[0])
            if not m:
                self.send_error(404, "not found")
                return
            path = library_dir / m.group(1)
            try:
                size = path.stat().st_size
            except OSError:
                self.send_error(404, "not found")
                return
            etag = f'"{m.group(1)}"'
            if self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.send_header("ETag", etag)
                self.end_headers()
                return
            start, end, status = 0, size - 1, 200
            rng = self.headers.get("Range")
            if rng:
                rm = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip())
                if not rm or (rm.group(1) == "" and rm.group(2) == ""):
                    self._unsatisfiable(size)
                    return
                if rm.group(1) == "":
                    start = max(0, size - int(rm.group(2)))
                else:
                    start = int(rm.group(1))
                    end = min(size - 1, int(rm.group(2))) if rm.group(2) else size - 1
                if start > end or start >= size:
                    self._unsatisfiable(size)
                    return
                status = 206
            with open(path, "rb") as f:
                head_bytes = f.read(16)
            fmt = sniff_format(head_bytes) or "mp3"
            self.send_response(status)
            self.send_header("Content-Type", CONTENT_TYPES.get(fmt, "application/octet-stream"))
            self.send_header("Content-Length", str(end - start + 1))
            self.send_header("ETag", etag)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Cache-Control", "public, max-age=31536000, immutable")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if head:
                return
            with open(path, "rb") as f:
                f.seek(start)
                remaining = end - start + 1
                while remaining > 0:
                    chunk = f.read(min(65536, remaining))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    remaining -= len(chunk)

        def _unsatisfiable(self, size: int) -> None:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()

    return MediaHandler


class MediaServer:
    """The HTTP server nodes fetch media from (a thread of the station process)."""

    def __init__(self, library_dir: Path, host: str, port: int):
        self.httpd = http.server.ThreadingHTTPServer((host, port), make_handler(library_dir))
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_port
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="media-http", daemon=True)

    def start(self) -> "MediaServer":
        self._thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def copy_into(library: MediaLibrary, path: Path, source: str) -> MediaInfo:
    """Register a file the station produced itself (TTS), keeping the original."""
    with tempfile.NamedTemporaryFile(dir=library.dir, prefix=".tts-", delete=False) as tmp:
        shutil.copyfileobj(open(path, "rb"), tmp)
    try:
        return library.import_file(Path(tmp.name), filename=path.name, source=source)
    finally:
        Path(tmp.name).unlink(missing_ok=True)

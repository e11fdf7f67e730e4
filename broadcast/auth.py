"""Console accounts: scrypt password hashes, server-side sessions behind signed cookies,
per-session CSRF tokens, and a login rate limiter.

A session cookie holds a random id and its HMAC under the station's session secret; the
database stores only the id's SHA-256, so a stolen database copy gives no sessions, and
a forged cookie fails the signature before any lookup.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from devices.errors import ValidationError

from .areas import Actor, Role, audit
from .db import now_ms, transaction

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 14, 8, 1
MIN_PASSWORD = 10
MAX_PASSWORD = 200


def hash_password(password: str, *, salt: bytes | None = None, n: int = SCRYPT_N) -> str:
    salt = salt or os.urandom(16)
    dk = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=SCRYPT_R, p=SCRYPT_P, dklen=32,
                        maxmem=64 * 1024 * 1024)
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${base64.b64encode(salt).decode()}${base64.b64encode(dk).decode()}"


def verify_password(password: str, stored: str | None) -> bool:
    if not stored or not stored.startswith("scrypt$"):
        return False
    try:
        _, n, r, p, salt, dk = stored.split("$")
        want = base64.b64decode(dk)
        got = hashlib.scrypt(password.encode("utf-8", "surrogatepass"), salt=base64.b64decode(salt), n=int(n),
                             r=int(r), p=int(p), dklen=len(want), maxmem=64 * 1024 * 1024)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


_DUMMY_HASH = None


def _dummy_hash() -> str:
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = hash_password(secrets.token_hex(8))
    return _DUMMY_HASH


def check_new_password(password: str) -> None:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise ValidationError([f"mật khẩu: ít nhất {MIN_PASSWORD} ký tự"])
    if len(password) > MAX_PASSWORD:
        raise ValidationError([f"mật khẩu: tối đa {MAX_PASSWORD} ký tự"])


def set_password(db: sqlite_utils.Database, actor: Actor | str, username: str, password: str) -> None:
    """Set a user's password; their open sessions end."""
    check_new_password(password)
    if db.execute("SELECT 1 FROM users WHERE username = ?", [username]).fetchone() is None:
        raise ValidationError([f"người dùng: không có tài khoản {username!r}"])
    hashed = hash_password(password)
    with transaction(db):
        db.execute("UPDATE users SET password_hash = ? WHERE username = ?", [hashed, username])
        db.execute("DELETE FROM web_sessions WHERE username = ?", [username])
        audit(db, actor, "user.password", "user", username, None)


def authenticate(db: sqlite_utils.Database, username: str, password: str) -> Actor | None:
    """The user's Actor when the password matches; the same work is done for unknown users."""
    row = db.execute("SELECT role, password_hash FROM users WHERE username = ?", [username]).fetchone()
    if row is None or not row[1]:
        verify_password(password, _dummy_hash())
        return None
    return Actor(username, Role(row[0])) if verify_password(password, row[1]) else None


# --- session secret and cookies ----------------------------------------------------------

def load_or_create_secret(path: Path) -> bytes:
    path = Path(path)
    try:
        data = path.read_bytes().strip()
        if len(data) >= 32:
            return data
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(32).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secret)
    return secret


def _sign(secret: bytes, value: str) -> str:
    return hmac.new(secret, value.encode(), hashlib.sha256).hexdigest()[:32]


@dataclass(frozen=True)
class Session:
    actor: Actor
    display_name: str
    csrf: str
    expires_at: int


def open_session(db: sqlite_utils.Database, secret: bytes, actor: Actor, hours: float, ip: str | None) -> str:
    """Create a session; returns the cookie value."""
    sid = secrets.token_urlsafe(24)
    now = now_ms()
    with transaction(db):
        db.execute("DELETE FROM web_sessions WHERE expires_at < ?", [now])
        db.execute("INSERT INTO web_sessions VALUES (?, ?, ?, ?, ?, ?)",
                   [hashlib.sha256(sid.encode()).hexdigest(), actor.username, secrets.token_urlsafe(24), now,
                    now + int(hours * 3_600_000), (ip or "")[:64]])
        audit(db, actor, "login", "user", actor.username, {"ip": ip})
    return f"{sid}.{_sign(secret, sid)}"


def session_for(db: sqlite_utils.Database, secret: bytes, cookie: str | None) -> Session | None:
    if not cookie or len(cookie) > 200 or "." not in cookie:
        return None
    sid, _, sig = cookie.rpartition(".")
    if not hmac.compare_digest(sig, _sign(secret, sid)):
        return None
    row = db.execute("SELECT s.username, u.role, u.display_name, s.csrf, s.expires_at FROM web_sessions s "
                     "JOIN users u ON u.username = s.username WHERE s.id_sha256 = ?",
                     [hashlib.sha256(sid.encode()).hexdigest()]).fetchone()
    if row is None or row[4] < now_ms():
        return None
    return Session(Actor(row[0], Role(row[1])), row[2], row[3], row[4])


def close_session(db: sqlite_utils.Database, cookie: str | None, actor: Actor) -> None:
    sid = (cookie or "").rpartition(".")[0]
    with transaction(db):
        db.execute("DELETE FROM web_sessions WHERE id_sha256 = ?", [hashlib.sha256(sid.encode()).hexdigest()])
        audit(db, actor, "logout", "user", actor.username, None)


# --- login rate limiting -----------------------------------------------------------------

class LoginLimiter:
    """At most ``max_failures`` failed logins per username and per client address within
    ``window_s``; a locked key stays locked until its oldest failure leaves the window."""

    def __init__(self, max_failures: int = 5, window_s: float = 300.0, clock=time.monotonic):
        self.max_failures, self.window_s, self.clock = max_failures, window_s, clock
        self._failures: dict[str, deque] = {}
        self._lock = threading.Lock()

    def _trim(self, key: str) -> deque:
        q = self._failures.setdefault(key, deque())
        limit = self.clock() - self.window_s
        while q and q[0] < limit:
            q.popleft()
        return q

    def retry_after(self, *keys: str) -> float:
        """Seconds until a login may be tried again (0 when allowed)."""
        with self._lock:
            wait = 0.0
            for key in keys:
                q = self._trim(key)
                if len(q) >= self.max_failures:
                    wait = max(wait, q[0] + self.window_s - self.clock())
            return wait

    def failed(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._trim(key).append(self.clock())
            if len(self._failures) > 10_000:  # bounded memory under a spray of usernames
                for k in [k for k, q in self._failures.items() if not q][:5000]:
                    del self._failures[k]

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)

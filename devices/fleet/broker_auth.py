"""Broker accounts and access control for a ward's Mosquitto.

The station owns two files that Mosquitto reads: the password file (Mosquitto's own
`$7$` PBKDF2-SHA512 format, so `mosquitto_passwd` and the broker agree with us) and the
ACL file, generated from the list of accounts. After a change Mosquitto is told to
reload them (SIGHUP), which also disconnects nothing but refuses a revoked account at
its next connect; `revoke` additionally kicks the live session through the broker.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import StorageError, ValidationError
from ..protocol import TOPIC_ROOT, validate_id

PBKDF2_ITERATIONS = 101  # what mosquitto_passwd 2.0 writes
SALT_BYTES = 12


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """Hash in Mosquitto 2's `$7$iterations$salt$digest` format (PBKDF2-SHA512)."""
    if not password or len(password) > 512 or any(c in password for c in "\n\r\x00"):
        raise ValidationError(["password must be 1-512 characters with no line breaks"])
    salt = salt if salt is not None else os.urandom(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations, 64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, hashed: str) -> bool:
    try:
        _, kind, iterations, salt, digest = hashed.split("$")
        if kind != "7":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), base64.b64decode(salt), int(iterations),
                                  len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(expected, got)


def new_password() -> str:
    """A random password for a device account (~190 bits, URL-safe, no quoting needed)."""
    return secrets.token_urlsafe(32)


def atomic_write(path: Path, text: str, mode: int = 0o640) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class PasswordFile:
    """Mosquitto's password file: `user:hash` lines, rewritten atomically."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.entries: dict[str, str] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        try:
            text = self.path.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise StorageError(f"cannot read password file {self.path}: {exc}") from exc
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            user, sep, hashed = line.partition(":")
            if not sep or not hashed.startswith("$"):
                raise StorageError(f"{self.path}:{n}: not a 'user:hash' line")
            self.entries[user] = hashed

    def set(self, username: str, password: str) -> None:
        self.entries[_check_username(username)] = hash_password(password)

    def remove(self, username: str) -> bool:
        return self.entries.pop(username, None) is not None

    def check(self, username: str, password: str) -> bool:
        hashed = self.entries.get(username)
        return hashed is not None and verify_password(password, hashed)

    def save(self) -> None:
        atomic_write(self.path, "".join(f"{u}:{h}\n" for u, h in sorted(self.entries.items())))

    def __contains__(self, username: object) -> bool:
        return username in self.entries


def _check_username(username: str) -> str:
    return validate_id(username, "account name")


class AccountKind(enum.StrEnum):
    STATION = "station"
    TECHNICIAN = "technician"
    KIOSK = "kiosk"
    DEVICE = "device"


@dataclass
class Account:
    name: str
    kind: AccountKind
    groups: list[str] = field(default_factory=list)  # devices only

    def __post_init__(self) -> None:
        _check_username(self.name)
        for g in self.groups:
            validate_id(g, "group id")
        if self.groups and self.kind is not AccountKind.DEVICE:
            raise ValidationError([f"account {self.name}: only devices belong to groups"])


def render_acl(site: str, accounts: list[Account]) -> str:
    """The ACL that confines every account to its own topics.

    A device may write only its own status/telemetry/ack/events/logs and read only its
    own cmd/config/schedule and its groups' cmd/schedule plus all/cmd. It can publish no
    command and read no other device's config. The station reads and writes the whole
    site; a technician may send (signed) commands and configs and read reports; a kiosk reads the
    station status only (kiosks talk to the station over HTTP).
    """
    validate_id(site, "site")
    root = f"{TOPIC_ROOT}/{site}"
    out = [f"# Generated by thanthien for site {site}; do not edit by hand (`thanthien fleet acl`).", ""]
    for acc in sorted(accounts, key=lambda a: (a.kind.value, a.name)):
        out.append(f"user {acc.name}")
        if acc.kind is AccountKind.STATION:
            out.append(f"topic readwrite {root}/#")
        elif acc.kind is AccountKind.TECHNICIAN:
            for t in ("devices/+/cmd", "groups/+/cmd", "all/cmd"):
                out.append(f"topic write {root}/{t}")
            out.append(f"topic readwrite {root}/devices/+/config")  # `fleet config set` (signed)
            for t in ("devices/+/status", "devices/+/telemetry", "devices/+/ack", "devices/+/events",
                      "devices/+/logs", "groups/+/schedule", "devices/+/schedule", "station/status"):
                out.append(f"topic read {root}/{t}")
        elif acc.kind is AccountKind.KIOSK:
            out.append(f"topic read {root}/station/status")
        else:
            dev = f"{root}/devices/{acc.name}"
            for ch in ("status", "telemetry", "ack", "events", "logs"):
                out.append(f"topic write {dev}/{ch}")
            for ch in ("cmd", "config", "schedule"):
                out.append(f"topic read {dev}/{ch}")
            for g in sorted(set(acc.groups)):
                out.append(f"topic read {root}/groups/{g}/cmd")
                out.append(f"topic read {root}/groups/{g}/schedule")
            out.append(f"topic read {root}/all/cmd")
            out.append(f"topic read {root}/station/status")
        out.append("")
    return "\n".join(out)


def write_acl(path: Path, site: str, accounts: list[Account]) -> None:
    atomic_write(Path(path), render_acl(site, accounts))

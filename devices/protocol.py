"""The MQTT contract between the station and the speaker nodes (docs/protocol.md).

Everything that crosses the broker is built and checked here and nowhere else:
topic names, the signed command envelope, the typed bodies, node reports, the replay
cache. Every refusal raises a :class:`~devices.errors.ProtocolError` subclass whose
``reason`` a node sends back on its ``ack`` topic.

Times on the wire are integer milliseconds since the Unix epoch (UTC); durations are
integer milliseconds too, so canonical JSON never depends on float formatting.
"""

from __future__ import annotations

import base64
import binascii
import collections
import dataclasses
import enum
import hashlib
import json
import os
import re
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

from . import errors
from .typed import field, structure, unstructure

PROTOCOL_VERSION = 1
TOPIC_ROOT = "thanthien/v1"
ID_MAX_LEN = 64
ID_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")
ID_HELP = "1-64 lowercase ascii letters, digits or '-', not starting or ending with '-'"
MAX_PAYLOAD_BYTES = 256 * 1024
DEFAULT_MAX_SKEW_MS = 30_000
SHA256_PATTERN = r"[0-9a-f]{64}"
UUID_PATTERN = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
HTTP_URL_PATTERN = r"https?://[^\s\x00-\x1f]{1,2000}"
HHMM_PATTERN = r"([01][0-9]|2[0-3]):[0-5][0-9]"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# --- identifiers and topics ------------------------------------------------------------


def validate_id(value: object, kind: str = "id") -> str:
    """Return ``value`` if it is a safe site/device/group id, else raise InvalidIdentifier.

    Safe means it can never inject a topic level or an MQTT wildcard.
    """
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        shown = repr(value)[:80]
        raise errors.InvalidIdentifier(f"{kind} {shown} must be {ID_HELP}")
    return value


class Scope(enum.StrEnum):
    DEVICE = "devices"
    GROUP = "groups"
    ALL = "all"
    STATION = "station"


class Channel(enum.StrEnum):
    CMD = "cmd"
    CONFIG = "config"
    SCHEDULE = "schedule"
    STATUS = "status"
    TELEMETRY = "telemetry"
    ACK = "ack"
    EVENTS = "events"
    LOGS = "logs"


#: Which channels exist under which scope. Anything else is not a thanthien topic.
SCOPE_CHANNELS: dict[Scope, frozenset[Channel]] = {
    Scope.DEVICE: frozenset(Channel),
    Scope.GROUP: frozenset({Channel.CMD, Channel.SCHEDULE}),
    Scope.ALL: frozenset({Channel.CMD}),
    Scope.STATION: frozenset({Channel.STATUS}),
}

#: Channels a node publishes on (unsigned JSON reports; the broker ACL authenticates them).
NODE_CHANNELS = frozenset({Channel.STATUS, Channel.TELEMETRY, Channel.ACK, Channel.EVENTS, Channel.LOGS})


@dataclass(frozen=True)
class TopicRef:
    """A parsed thanthien topic."""

    site: str
    scope: Scope
    target: str | None
    channel: Channel

    def __str__(self) -> str:
        parts = [TOPIC_ROOT, self.site, self.scope.value]
        if self.target is not None:
            parts.append(self.target)
        parts.append(self.channel.value)
        return "/".join(parts)


class Topics:
    """Topic builder for one site (ward). Every id is validated before use."""

    def __init__(self, site: str):
        self.site = validate_id(site, "site")
        self.prefix = f"{TOPIC_ROOT}/{self.site}"

    def device(self, device_id: str, channel: Channel) -> str:
        return str(TopicRef(self.site, Scope.DEVICE, validate_id(device_id, "device id"), Channel(channel)))

    def group(self, group_id: str, channel: Channel) -> str:
        channel = Channel(channel)
        if channel not in SCOPE_CHANNELS[Scope.GROUP]:
            raise errors.InvalidTopic(f"groups have no {channel} channel")
        return str(TopicRef(self.site, Scope.GROUP, validate_id(group_id, "group id"), channel))

    def all_cmd(self) -> str:
        return f"{self.prefix}/all/cmd"

    def station_status(self) -> str:
        return f"{self.prefix}/station/status"

    def devices_filter(self, channel: Channel) -> str:
        """Subscription filter for one channel of every device, e.g. all statuses."""
        return f"{self.prefix}/devices/+/{Channel(channel).value}"

    def inbound_for_node(self, device_id: str, groups: Iterable[str]) -> list[str]:
        """Every topic a node reads: its own cmd/config/schedule, its groups', and all/cmd."""
        out = [self.device(device_id, c) for c in (Channel.CMD, Channel.CONFIG, Channel.SCHEDULE)]
        for g in sorted(set(groups)):
            out += [self.group(g, Channel.CMD), self.group(g, Channel.SCHEDULE)]
        out.append(self.all_cmd())
        return out

    def parse(self, topic: str) -> TopicRef:
        ref = parse_topic(topic)
        if ref.site != self.site:
            raise errors.InvalidTopic(f"topic {topic[:120]!r} belongs to site {ref.site!r}, not {self.site!r}")
        return ref


def parse_topic(topic: str) -> TopicRef:
    """Parse a concrete topic; raise InvalidTopic for anything not in the contract."""
    if not isinstance(topic, str) or len(topic) > 512:
        raise errors.InvalidTopic("topic is not a string of at most 512 characters")
    root = TOPIC_ROOT + "/"
    if not topic.startswith(root):
        raise errors.InvalidTopic(f"topic {topic[:120]!r} is not under {TOPIC_ROOT}/")
    parts = topic[len(root):].split("/")
    try:
        site = validate_id(parts[0], "site")
        scope = Scope(parts[1])
        if scope in (Scope.ALL, Scope.STATION):
            if len(parts) != 3:
                raise ValueError
            target, channel = None, Channel(parts[2])
        else:
            if len(parts) != 4:
                raise ValueError
            target = validate_id(parts[2], "device id" if scope is Scope.DEVICE else "group id")
            channel = Channel(parts[3])
    except (IndexError, ValueError) as exc:
        if isinstance(exc, errors.InvalidIdentifier):
            raise errors.InvalidTopic(exc.detail) from None
        raise errors.InvalidTopic(f"topic {topic[:120]!r} does not match the contract") from None
    if channel not in SCOPE_CHANNELS[scope]:
        raise errors.InvalidTopic(f"{scope.value} has no {channel.value} channel")
    return TopicRef(site, scope, target, channel)


# --- message types and bodies ----------------------------------------------------------


class Priority(enum.IntEnum):
    """Circular 39/2020 levels, plus background for relays of external streams."""

    BACKGROUND = 0
    NORMAL = 1
    PRIORITY = 2
    EMERGENCY = 3


class MessageType(enum.StrEnum):
    PLAY = "play"
    STOP = "stop"
    VOLUME = "volume"
    RELAY = "relay"
    TEST_TONE = "test_tone"
    IDENTIFY = "identify"
    PING = "ping"
    RESTART = "restart"
    SYNC_SCHEDULE = "sync_schedule"
    LOGS = "logs"
    CONFIG = "config"
    SCHEDULE = "schedule"


#: Retained, versioned documents: protected against replay by their version, not by id.
DOCUMENT_TYPES = frozenset({MessageType.CONFIG, MessageType.SCHEDULE})
#: The channel each message type must arrive on.
TYPE_CHANNEL = {t: (Channel(t.value) if t in DOCUMENT_TYPES else Channel.CMD) for t in MessageType}


@dataclass(frozen=True)
class MediaRef:
    """Audio a node must fetch over HTTP and verify before it may play it."""

    url: str = field(pattern=HTTP_URL_PATTERN, pattern_help="an http:// or https:// URL")
    sha256: str = field(pattern=SHA256_PATTERN, pattern_help="64 lowercase hex digits")
    bytes: int = field(min=1, max=2 * 1024**3)


class LatePolicy(enum.StrEnum):
    """What a node does with an occurrence whose start it missed (e.g. it was off)."""

    SKIP = "skip"          # report `missed`, do not play
    PLAY_LATE = "play_late"  # play as soon as possible if still within max_late_ms


class InterruptPolicy(enum.StrEnum):
    """What happens to an item pre-empted by a higher priority."""

    RESUME = "resume"    # continue from where it stopped
    RESTART = "restart"  # play again from the beginning
    DROP = "drop"        # report `interrupted` and forget it


@dataclass(frozen=True)
class PlayBody:
    media: MediaRef
    start_at: int | None = field(None, min=0)
    volume: int | None = field(None, min=0, max=100)
    repeat: int = field(1, min=1, max=20)
    broadcast_id: str | None = field(None, max_len=64)
    occurrence_id: str | None = field(None, max_len=128)
    title: str | None = field(None, max_len=200)
    interrupt_policy: InterruptPolicy = InterruptPolicy.RESUME


@dataclass(frozen=True)
class StopBody:
    broadcast_id: str | None = field(None, max_len=64)


@dataclass(frozen=True)
class VolumeBody:
    volume: int = field(min=0, max=100)


@dataclass(frozen=True)
class RelayBody:
    url: str = field(pattern=HTTP_URL_PATTERN, pattern_help="an http:// or https:// stream URL")
    until: int | None = field(None, min=0)
    volume: int | None = field(None, min=0, max=100)
    broadcast_id: str | None = field(None, max_len=64)
    occurrence_id: str | None = field(None, max_len=128)


@dataclass(frozen=True)
class TestToneBody:
    __test__ = False  # not a pytest class
    duration_ms: int = field(3000, min=100, max=60_000)
    frequency_hz: int = field(1000, min=50, max=8000)
    volume: int | None = field(None, min=0, max=100)


@dataclass(frozen=True)
class IdentifyBody:
    duration_ms: int = field(5000, min=500, max=60_000)


@dataclass(frozen=True)
class PingBody:
    nonce: str | None = field(None, max_len=64)


@dataclass(frozen=True)
class RestartBody:
    reason: str | None = field(None, max_len=200)


@dataclass(frozen=True)
class SyncScheduleBody:
    pass


@dataclass(frozen=True)
class LogsBody:
    lines: int = field(100, min=1, max=2000)


@dataclass(frozen=True)
class QuietHours:
    start: str = field(pattern=HHMM_PATTERN, pattern_help="a time HH:MM")
    end: str = field(pattern=HHMM_PATTERN, pattern_help="a time HH:MM")


@dataclass(frozen=True)
class AmpTimings:
    warmup_ms: int = field(1500, min=0, max=30_000)
    tail_ms: int = field(2000, min=0, max=120_000)


@dataclass(frozen=True)
class TrustedKey:
    kid: str = field(pattern=r"[0-9a-f]{16}", pattern_help="16 lowercase hex digits")
    public_key: str = field(max_len=100, help="base64 of the raw 32-byte Ed25519 public key")
    not_after: int | None = field(None, min=0, help="stop trusting this key after this time (ms)")


@dataclass(frozen=True)
class ConfigBody:
    """Per-device settings, retained on devices/<id>/config."""

    version: int = field(min=1)
    device_id: str = field(pattern=ID_PATTERN.pattern, pattern_help=ID_HELP)
    groups: list[str] = field(default_factory=list, max_len=32)
    volume: int = field(70, min=0, max=100)
    max_volume: int = field(100, min=0, max=100)
    emergency_volume: int = field(100, min=0, max=100)
    quiet_hours: list[QuietHours] = field(default_factory=list, max_len=8)
    amp: AmpTimings = field(default_factory=AmpTimings)
    telemetry_interval_s: int = field(60, min=5, max=3600)
    trusted_keys: list[TrustedKey] | None = field(None, max_len=4)

    def __post_init__(self) -> None:
        for g in self.groups:
            validate_id(g, "group id")


@dataclass(frozen=True)
class ScheduleItem:
    occurrence_id: str = field(min_len=1, max_len=128)
    start_at: int = field(min=0)
    kind: str = field("play", choices=("play", "relay"))
    priority: Priority = Priority.NORMAL
    broadcast_id: str | None = field(None, max_len=64)
    title: str | None = field(None, max_len=200)
    media: MediaRef | None = None
    url: str | None = field(None, pattern=HTTP_URL_PATTERN, pattern_help="an http:// or https:// stream URL")
    until: int | None = field(None, min=0)
    volume: int | None = field(None, min=0, max=100)
    repeat: int = field(1, min=1, max=20)
    late_policy: LatePolicy = LatePolicy.SKIP
    max_late_ms: int = field(0, min=0, max=24 * 3600 * 1000)
    interrupt_policy: InterruptPolicy = InterruptPolicy.RESUME

    def __post_init__(self) -> None:
        if self.kind == "play" and self.media is None:
            raise ValueError(f"item {self.occurrence_id}: a play item needs 'media'")
        if self.kind == "relay" and (self.url is None or self.until is None):
            raise ValueError(f"item {self.occurrence_id}: a relay item needs 'url' and 'until'")
        if self.until is not None and self.until <= self.start_at:
            raise ValueError(f"item {self.occurrence_id}: 'until' must be after 'start_at'")


@dataclass(frozen=True)
class ScheduleBody:
    """A versioned list of upcoming occurrences for one device or group (retained)."""

    version: int = field(min=1)
    target: str = field(pattern=r"(devices|groups)/" + ID_PATTERN.pattern,
                        pattern_help="'devices/<id>' or 'groups/<id>'")
    horizon_end: int = field(min=0)
    items: list[ScheduleItem] = field(default_factory=list, max_len=2000)

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for item in self.items:
            if item.occurrence_id in seen:
                raise ValueError(f"occurrence_id {item.occurrence_id!r} appears twice")
            seen.add(item.occurrence_id)


BODY_TYPES: dict[MessageType, type] = {
    MessageType.PLAY: PlayBody,
    MessageType.STOP: StopBody,
    MessageType.VOLUME: VolumeBody,
    MessageType.RELAY: RelayBody,
    MessageType.TEST_TONE: TestToneBody,
    MessageType.IDENTIFY: IdentifyBody,
    MessageType.PING: PingBody,
    MessageType.RESTART: RestartBody,
    MessageType.SYNC_SCHEDULE: SyncScheduleBody,
    MessageType.LOGS: LogsBody,
    MessageType.CONFIG: ConfigBody,
    MessageType.SCHEDULE: ScheduleBody,
}


def parse_body(msg_type: MessageType, body: Any) -> Any:
    try:
        return structure(BODY_TYPES[msg_type], body, source=f"{msg_type.value} body")
    except errors.ValidationError as exc:
        raise errors.InvalidBody("; ".join(exc.problems)) from None


# --- canonical JSON and keys -----------------------------------------------------------


def canonical_json(obj: Any) -> bytes:
    """The one byte form that is signed: sorted keys, no spaces, UTF-8, no NaN."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    if not isinstance(text, str) or len(text) > 200:
        raise ValueError("not a short base64 string")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_id(public_raw: bytes) -> str:
    """Short, stable name of a public key: 16 hex digits of its sha256."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


class VerifyKey:
    """An Ed25519 public key the node trusts, with its key id."""

    def __init__(self, public_raw: bytes, not_after_ms: int | None = None):
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        if len(public_raw) != 32:
            raise errors.ValidationError(["public key must be 32 raw bytes"])
        self.raw = bytes(public_raw)
        self.kid = key_id(self.raw)
        self.not_after_ms = not_after_ms
        self._key = Ed25519PublicKey.from_public_bytes(self.raw)

    @classmethod
    def from_text(cls, text: str, not_after_ms: int | None = None) -> "VerifyKey":
        """Accept base64 (standard or url-safe) of the 32 raw bytes."""
        try:
            raw = base64.b64decode(text.strip().replace("-", "+").replace("_", "/") + "=" * (-len(text.strip()) % 4),
                                   validate=True)
        except (binascii.Error, ValueError):
            raise errors.ValidationError([f"public key {text[:20]!r}... is not base64"]) from None
        return cls(raw, not_after_ms)

    def to_text(self) -> str:
        return base64.b64encode(self.raw).decode("ascii")

    def verify(self, signature: bytes, data: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature

        try:
            self._key.verify(signature, data)
            return True
        except InvalidSignature:
            return False


class SigningKey:
    """The station's Ed25519 private key."""

    def __init__(self, private_raw: bytes):
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        self._key = Ed25519PrivateKey.from_private_bytes(private_raw)
        self._raw = bytes(private_raw)
        self.public = VerifyKey(self._key.public_key().public_bytes_raw())
        self.kid = self.public.kid

    @classmethod
    def generate(cls) -> "SigningKey":
        return cls(os.urandom(32))

    @classmethod
    def load_or_create(cls, path: Path) -> "SigningKey":
        """Load the key at ``path``; on first start create it with mode 0600."""
        path = Path(path)
        if path.exists():
            return cls.load(path)
        key = cls.generate()
        key.save(path)
        return key

    @classmethod
    def load(cls, path: Path) -> "SigningKey":
        try:
            text = Path(path).read_text("ascii").strip()
            raw = base64.b64decode(text, validate=True)
        except (OSError, UnicodeDecodeError, binascii.Error) as exc:
            raise errors.StorageError(f"cannot read signing key {path}: {exc}") from exc
        if len(raw) != 32:
            raise errors.StorageError(f"signing key {path} is not a 32-byte Ed25519 key")
        return cls(raw)

    def save(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, base64.b64encode(self._raw) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


# --- the envelope ---------------------------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    """A verified message: its header fields and its typed body."""

    v: int
    id: str
    type: MessageType
    issued_at: int
    expires_at: int | None
    priority: Priority
    body: Any
    kid: str

    @property
    def is_document(self) -> bool:
        return self.type in DOCUMENT_TYPES


def encode_envelope(key: SigningKey, msg_type: MessageType | str, body: Any, *,
                    priority: Priority = Priority.NORMAL, ttl_ms: int | None = 60_000,
                    msg_id: str | None = None, issued_at: int | None = None) -> bytes:
    """Build and sign an envelope; ``body`` may be a body dataclass or a plain dict.

    ``ttl_ms=None`` gives a document that never expires (configs only).
    """
    msg_type = MessageType(msg_type)
    plain = unstructure(body) if dataclasses.is_dataclass(body) else body
    issued = now_ms() if issued_at is None else issued_at
    env = {
        "v": PROTOCOL_VERSION,
        "id": msg_id or str(uuid.uuid4()),
        "type": msg_type.value,
        "issued_at": issued,
        "expires_at": None if ttl_ms is None else issued + ttl_ms,
        "priority": int(priority),
        "kid": key.kid,
        "body": plain,
    }
    try:
        env["sig"] = _b64e(key.sign(canonical_json(env)))
    except ValueError as exc:  # NaN, or text that is not valid Unicode
        raise errors.InvalidBody(f"the body cannot be signed: {str(exc)[:100]}") from None
    return canonical_json(env)


_HEADER_FIELDS = {"v", "id", "type", "issued_at", "expires_at", "priority", "kid", "body", "sig"}


class ReplayStore(Protocol):
    def check_and_add(self, msg_id: str, expires_at: int) -> bool:
        """Remember ``msg_id``; return False if it was already seen."""

    def prune(self, now: int) -> None:
        """Forget ids whose message has expired (they are refused as expired anyway)."""


class MemoryReplayStore:
    """Bounded in-memory replay cache (ids kept until their message expires)."""

    def __init__(self, capacity: int = 100_000):
        self.capacity = capacity
        self._seen: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._lock = threading.Lock()

    def check_and_add(self, msg_id: str, expires_at: int) -> bool:
        with self._lock:
            if msg_id in self._seen:
                return False
            self._seen[msg_id] = expires_at
            while len(self._seen) > self.capacity:
                self._seen.popitem(last=False)
            return True

    def prune(self, now: int) -> None:
        with self._lock:
            for k in [k for k, exp in self._seen.items() if exp < now]:
                del self._seen[k]

    def __len__(self) -> int:
        return len(self._seen)


class SqliteReplayStore:
    """Replay cache that survives restarts (a node must not replay after a power cut)."""

    def __init__(self, path: Path | str):
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS replay_cache (id TEXT PRIMARY KEY, expires_at INTEGER NOT NULL)")
        self._lock = threading.Lock()

    def check_and_add(self, msg_id: str, expires_at: int) -> bool:
        with self._lock:
            cur = self._db.execute("INSERT OR IGNORE INTO replay_cache (id, expires_at) VALUES (?, ?)",
                                   (msg_id, expires_at))
            return cur.rowcount == 1

    def prune(self, now: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM replay_cache WHERE expires_at < ?", (now,))

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "SqliteReplayStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Verifier:
    """Checks envelopes: size, JSON, shape, signature, time window, replay, body."""

    def __init__(self, keys: Iterable[VerifyKey], *, replay: ReplayStore | None = None,
                 max_skew_ms: int = DEFAULT_MAX_SKEW_MS, max_bytes: int = MAX_PAYLOAD_BYTES,
                 clock: Callable[[], int] = now_ms):
        self._keys: dict[str, VerifyKey] = {k.kid: k for k in keys}
        self.replay = replay if replay is not None else MemoryReplayStore()
        self.max_skew_ms = max_skew_ms
        self.max_bytes = max_bytes
        self.clock = clock

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    def trust(self, key: VerifyKey) -> None:
        self._keys[key.kid] = key

    def distrust(self, kid: str) -> None:
        self._keys.pop(kid, None)

    def verify(self, payload: bytes | bytearray | str) -> Envelope:
        if isinstance(payload, str):
            payload = payload.encode("utf-8", "surrogatepass")
        if len(payload) > self.max_bytes:
            raise errors.PayloadTooLarge(f"{len(payload)} bytes, limit {self.max_bytes}")
        try:
            raw = json.loads(payload)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise errors.MalformedMessage(f"not JSON: {str(exc)[:100]}") from None
        if not isinstance(raw, dict):
            raise errors.InvalidEnvelope("envelope must be a JSON object")
        unknown = set(raw) - _HEADER_FIELDS
        if unknown:
            raise errors.InvalidEnvelope(f"unknown envelope fields: {', '.join(sorted(map(str, unknown)))[:200]}")
        if raw.get("v") != PROTOCOL_VERSION:
            raise errors.UnsupportedVersion(f"v must be {PROTOCOL_VERSION}, got {str(raw.get('v'))[:20]}")
        msg_id = raw.get("id")
        if not isinstance(msg_id, str) or not re.fullmatch(UUID_PATTERN, msg_id):
            raise errors.InvalidEnvelope("id must be a lowercase UUID string")
        try:
            msg_type = MessageType(raw.get("type"))
        except ValueError:
            raise errors.UnknownMessageType(f"unknown type {str(raw.get('type'))[:40]!r}") from None
        issued_at, expires_at = raw.get("issued_at"), raw.get("expires_at")
        if not _is_int(issued_at) or issued_at < 0:
            raise errors.InvalidEnvelope("issued_at must be a non-negative integer (ms since epoch)")
        if expires_at is None:
            if msg_type is not MessageType.CONFIG:
                raise errors.InvalidEnvelope("expires_at is required (only a config may omit it)")
        elif not _is_int(expires_at) or expires_at < issued_at:
            raise errors.InvalidEnvelope("expires_at must be an integer not before issued_at")
        priority = raw.get("priority")
        if not _is_int(priority) or priority not in tuple(Priority):
            raise errors.InvalidEnvelope("priority must be 0, 1, 2 or 3")
        if "body" not in raw:
            raise errors.InvalidEnvelope("body is missing")
        sig = raw.pop("sig", None)
        if sig is None:
            raise errors.MissingSignature("sig is missing")
        kid = raw.get("kid")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise errors.UnknownKey(f"key id {str(kid)[:20]!r} is not trusted")
        try:
            sig_raw = _b64d(sig)
        except (ValueError, binascii.Error):
            raise errors.BadSignature("sig is not base64url") from None
        try:
            signed = canonical_json(raw)
        except ValueError:
            raise errors.MalformedMessage("payload holds values that cannot be signed (NaN, Infinity or text that is not valid Unicode)") from None
        if len(sig_raw) != 64 or not key.verify(sig_raw, signed):
            raise errors.BadSignature("signature does not match the payload")
        now = self.clock()
        if key.not_after_ms is not None and issued_at > key.not_after_ms:
            raise errors.UnknownKey(f"key {kid} was retired before this message was issued")
        if issued_at > now + self.max_skew_ms:
            raise errors.FutureMessage(f"issued {issued_at - now} ms in the future (allowed skew {self.max_skew_ms} ms)")
        if expires_at is not None and expires_at + self.max_skew_ms < now:
            raise errors.ExpiredMessage(f"expired {now - expires_at} ms ago")
        body = parse_body(msg_type, raw["body"])
        if msg_type not in DOCUMENT_TYPES:
            if not self.replay.check_and_add(msg_id, expires_at + self.max_skew_ms):
                raise errors.ReplayedMessage(f"id {msg_id} was already received")
        return Envelope(PROTOCOL_VERSION, msg_id, msg_type, issued_at, expires_at, Priority(priority), body, kid)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_channel(env: Envelope, ref: TopicRef) -> None:
    """A message must arrive on the channel its type belongs to (no schedule on cmd...)."""
    expected = TYPE_CHANNEL[env.type]
    if ref.channel is not expected:
        raise errors.WrongRecipient(f"a {env.type.value} message is not valid on the {ref.channel.value} channel")
    if env.type is MessageType.SCHEDULE and env.body.target != f"{ref.scope.value}/{ref.target}":
        raise errors.WrongRecipient(f"schedule for {env.body.target} arrived on {ref.scope.value}/{ref.target}")
    if env.type is MessageType.CONFIG and (ref.scope is not Scope.DEVICE or env.body.device_id != ref.target):
        raise errors.WrongRecipient(f"config for {env.body.device_id} arrived on {ref}")


# --- reports from nodes (unsigned; the broker ACL says who may publish them) -----------


class NodeState(enum.StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


class AckStatus(enum.StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    DONE = "done"
    FAILED = "failed"


class EventType(enum.StrEnum):
    PLAY_STARTED = "play_started"
    PLAY_FINISHED = "play_finished"
    PLAY_FAILED = "play_failed"
    INTERRUPTED = "interrupted"
    MISSED = "missed"
    ERROR = "error"
    SCHEDULE_APPLIED = "schedule_applied"


@dataclass(frozen=True)
class StatusReport:
    state: NodeState
    at: int = field(min=0)
    version: str | None = field(None, max_len=40)
    schedule_versions: dict[str, int] | None = None
    config_version: int | None = None
    reason: str | None = field(None, max_len=200)


@dataclass(frozen=True)
class AckReport:
    cmd_id: str = field(max_len=64)
    status: AckStatus
    at: int = field(min=0)
    type: str | None = field(None, max_len=32)
    reason: str | None = field(None, max_len=64)
    detail: str | None = field(None, max_len=500)
    result: dict[str, Any] | None = None


@dataclass(frozen=True)
class EventReport:
    id: str = field(pattern=UUID_PATTERN, pattern_help="a lowercase UUID")
    type: EventType
    at: int = field(min=0)
    broadcast_id: str | None = field(None, max_len=64)
    occurrence_id: str | None = field(None, max_len=128)
    scheduled_at: int | None = None
    started_at: int | None = None
    ended_at: int | None = None
    duration_ms: int | None = field(None, min=0)
    volume: int | None = field(None, min=0, max=100)
    priority: Priority | None = None
    reason: str | None = field(None, max_len=500)
    detail: dict[str, Any] | None = None


@dataclass(frozen=True)
class LogsReport:
    """A node's answer to a `logs` command, on devices/<id>/logs."""

    cmd_id: str = field(max_len=64)
    at: int = field(min=0)
    lines: list[str] = field(default_factory=list, max_len=2000)


REPORT_TYPES: dict[Channel, type] = {
    Channel.STATUS: StatusReport,
    Channel.ACK: AckReport,
    Channel.EVENTS: EventReport,
    Channel.LOGS: LogsReport,
}


def encode_report(report: Any) -> bytes:
    return canonical_json(unstructure(report))


def parse_report(channel: Channel, payload: bytes, *, max_bytes: int = 64 * 1024) -> Any:
    """Parse a node's status/ack/event payload; raise a ProtocolError on anything off."""
    if len(payload) > max_bytes:
        raise errors.PayloadTooLarge(f"{len(payload)} bytes, limit {max_bytes}")
    try:
        raw = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise errors.MalformedMessage(f"not JSON: {str(exc)[:100]}") from None
    cls = REPORT_TYPES.get(Channel(channel))
    if cls is None:
        if not isinstance(raw, dict):
            raise errors.InvalidBody(f"{channel} payload must be a JSON object")
        return raw
    try:
        return structure(cls, raw, source=f"{channel} report")
    except errors.ValidationError as exc:
        raise errors.InvalidBody("; ".join(exc.problems)) from None

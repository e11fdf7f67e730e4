"""A small, robust MQTT client on paho-mqtt 2 shared by the station, nodes and fleet tools.

What it adds to paho: a supervisor thread that reconnects with exponential backoff and
jitter; subscriptions remembered and renewed on every connect; a retained birth message
on connect and a retained Last Will; QoS 1 publishes that can wait for the broker's
PUBACK (also when they were queued while the link was down); handlers that can never
kill the network loop. Handlers run on the network thread: keep them short and hand
heavy work to a queue.
"""

from __future__ import annotations

import enum
import logging
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

from . import errors
from .typed import field

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TlsSettings:
    ca_file: Path = field(help="CA certificate that signed the broker's certificate")
    cert_file: Path | None = field(None, help="client certificate, when the broker wants one")
    key_file: Path | None = None


@dataclass(frozen=True)
class MqttSettings:
    """How to reach the broker; a `[mqtt]` table in every role's config."""

    host: str = field("127.0.0.1", min_len=1, max_len=253)
    port: int = field(1883, min=1, max=65535)
    username: str | None = field(None, max_len=128)
    password: str | None = field(None, max_len=256, help="prefer password_file")
    password_file: Path | None = None
    tls: TlsSettings | None = None
    protocol: str = field("5", choices=("5", "3.1.1"), help="MQTT version; 3.1.1 for brokers without v5")
    keepalive_s: int = field(30, min=5, max=3600)
    session_expiry_s: int = field(7 * 24 * 3600, min=0, max=2**32 - 1)
    reconnect_min_s: float = field(0.5, min=0.05, max=60)
    reconnect_max_s: float = field(60.0, min=0.1, max=3600)
    max_queued_messages: int = field(10_000, min=0, max=1_000_000)

    def read_password(self) -> str | None:
        if self.password_file is not None:
            try:
                return self.password_file.read_text("utf-8").strip()
            except OSError as exc:
                raise errors.ConfigError([f"mqtt.password_file: cannot read {self.password_file}: {exc.strerror}"]) from exc
        return self.password


class ConnectionState(enum.Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    CLOSED = "closed"


@dataclass(frozen=True)
class OutgoingMessage:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


@dataclass(frozen=True)
class IncomingMessage:
    topic: str
    payload: bytes
    qos: int
    retain: bool


Handler = Callable[[IncomingMessage], None]


class Backoff:
    """Exponential backoff with full jitter (AWS style), reset on success."""

    def __init__(self, minimum: float, maximum: float, rng: random.Random | None = None):
        self.minimum, self.maximum = minimum, maximum
        self._attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        ceiling = min(self.maximum, self.minimum * (2 ** self._attempt))
        self._attempt = min(self._attempt + 1, 32)
        return self.minimum / 2 + self._rng.uniform(0, ceiling - self.minimum / 2)

    def reset(self) -> None:
        self._attempt = 0


class PublishHandle:
    """The fate of one publish; ``wait`` blocks until the broker acknowledged it."""

    def __init__(self, mid: int, topic: str):
        self.mid = mid
        self.topic = topic
        self.refusal: str | None = None  # the broker's failure reason code (MQTT 5)
        self._done = threading.Event()

    def _complete(self, reason_code: object = None) -> None:
        if reason_code is not None and getattr(reason_code, "is_failure", False):
            self.refusal = str(reason_code)
        self._done.set()

    @property
    def acknowledged(self) -> bool:
        """True once the broker accepted the message (a refusal is not an acknowledgement)."""
        return self._done.is_set() and self.refusal is None

    def wait(self, timeout: float | None = 10.0) -> None:
        if not self._done.wait(timeout):
            raise errors.PublishTimeout(f"no PUBACK for {self.topic} within {timeout} s")
        if self.refusal is not None:
            raise errors.PublishRefused(f"the broker refused the publish to {self.topic}: {self.refusal}")


class MqttClient:
    """One MQTT connection with reconnect, birth/will, resubscribe and acked publishes."""

    def __init__(self, settings: MqttSettings, client_id: str, *, birth: OutgoingMessage | None = None,
                 will: OutgoingMessage | None = None, farewell: OutgoingMessage | None = None,
                 rng: random.Random | None = None):
        self.settings = settings
        self.client_id = client_id
        self.birth = birth
        self.will = will
        self.farewell = farewell if farewell is not None else will
        self._v5 = settings.protocol == "5"
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5 if self._v5 else paho.MQTTv311,
            clean_session=None if self._v5 else False,
        )
        self._client.max_queued_messages_set(settings.max_queued_messages)
        self._client.suppress_exceptions = True
        username = settings.username
        if username is not None:
            self._client.username_pw_set(username, settings.read_password())
        if settings.tls is not None:
            tls = settings.tls
            self._client.tls_set(ca_certs=str(tls.ca_file), certfile=str(tls.cert_file) if tls.cert_file else None,
                                 keyfile=str(tls.key_file) if tls.key_file else None)
        if will is not None:
            self._client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish
        self._lock = threading.RLock()
        self._subs: dict[str, tuple[int, Handler, int]] = {}  # filter -> (qos, handler, subscription id)
        self._next_sub_id = 1
        self._pending_lock = threading.Lock()
        self._pending: dict[int, PublishHandle] = {}
        self._acked_early: dict[int, object] = {}  # mid -> reason code
        self._connect_listeners: list[Callable[[], None]] = []
        self._backoff = Backoff(settings.reconnect_min_s, settings.reconnect_max_s, rng)
        self._state = ConnectionState.IDLE
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._socket_open = False
        self._ever_connected_socket = False
        self.last_error: str | None = None
        self.connect_count = 0

    # --- lifecycle ------------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> "MqttClient":
        """Start the network thread; it connects and keeps reconnecting until close()."""
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name=f"mqtt-{self.client_id}", daemon=True)
        self._thread.start()
        return self

    def wait_connected(self, timeout: float | None = None) -> bool:
        return self._connected.wait(timeout)

    def connect(self, timeout: float = 10.0) -> "MqttClient":
        """start() and wait for the first CONNACK, raising MqttError if it does not come."""
        self.start()
        if not self.wait_connected(timeout):
            raise errors.MqttError(
                f"cannot reach the MQTT broker at {self.settings.host}:{self.settings.port} within {timeout:g} s"
                + (f" ({self.last_error})" if self.last_error else ""))
        return self

    def close(self, timeout: float = 2.0) -> None:
        """Say goodbye (retained farewell), disconnect and stop the thread."""
        if self._state is ConnectionState.CLOSED:
            return
        if self.connected and self.farewell is not None:
            try:
                self.publish(self.farewell.topic, self.farewell.payload, qos=self.farewell.qos,
                             retain=self.farewell.retain).wait(timeout)
            except errors.ThanthienError as exc:
                log.warning("farewell not acknowledged: %s", exc)
        self._stop.set()
        try:
            self._client.disconnect()
        except Exception:  # pragma: no cover - paho raises nothing documented here
            log.debug("disconnect failed", exc_info=True)
        if self._thread is not None:
            self._thread.join(timeout + 2)
        self._state = ConnectionState.CLOSED
        self._connected.clear()

    def __enter__(self) -> "MqttClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_connect_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after every (re)connect, once subscriptions are renewed."""
        with self._lock:
            self._connect_listeners.append(callback)

    # --- pub/sub --------------------------------------------------------------------

    def subscribe(self, topic_filter: str, handler: Handler, qos: int = 1) -> None:
        """Remember the subscription (renewed on every connect) and subscribe now if up."""
        with self._lock:
            old = self._subs.get(topic_filter)
            sub_id = old[2] if old else self._next_sub_id
            self._next_sub_id += 0 if old else 1
            self._subs[topic_filter] = (qos, handler, sub_id)
        if self.connected:
            self._send_subscribe(topic_filter, qos, sub_id)

    def _send_subscribe(self, topic_filter: str, qos: int, sub_id: int) -> None:
        # MQTT 5: a subscription identifier tells which filter each delivered copy matched,
        # so overlapping filters never hand a handler another filter's copy.
        props = None
        if self._v5:
            props = Properties(PacketTypes.SUBSCRIBE)
            props.SubscriptionIdentifier = sub_id
        self._client.subscribe(topic_filter, qos, properties=props)

    def unsubscribe(self, topic_filter: str) -> None:
        with self._lock:
            self._subs.pop(topic_filter, None)
        if self.connected:
            self._client.unsubscribe(topic_filter)

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> PublishHandle:
        """Queue a publish. QoS 1 messages sent while the link is down go out on reconnect."""
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        # Never hold a lock of ours while calling into paho: paho calls on_publish while
        # holding its own queue mutex, so the opposite order would deadlock.
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == paho.MQTT_ERR_QUEUE_SIZE:
            raise errors.MqttError(f"outgoing queue full ({self.settings.max_queued_messages} messages)")
        if qos == 0 and info.rc != paho.MQTT_ERR_SUCCESS:
            raise errors.NotConnected(f"QoS 0 publish to {topic} dropped: not connected")
        handle = PublishHandle(info.mid, topic)
        with self._pending_lock:
            if info.mid in self._acked_early:
                handle._complete(self._acked_early.pop(info.mid))
            else:
                self._pending[info.mid] = handle
        return handle

    def publish_and_wait(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False,
                         timeout: float = 10.0) -> None:
        self.publish(topic, payload, qos, retain).wait(timeout)

    # --- paho callbacks (network thread) ----------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.last_error = f"broker refused the connection: {reason_code}"
            log.error("%s: %s", self.client_id, self.last_error)
            return
        self.last_error = None
        self.connect_count += 1
        self._backoff.reset()
        with self._lock:
            subs = list(self._subs.items())
            listeners = list(self._connect_listeners)
        for topic_filter, (qos, _handler, sub_id) in subs:
            self._send_subscribe(topic_filter, qos, sub_id)
        if self.birth is not None:
            self.publish(self.birth.topic, self.birth.payload, qos=self.birth.qos, retain=self.birth.retain)
        self._state = ConnectionState.CONNECTED
        self._connected.set()
        log.info("%s: connected to %s:%s (session present: %s)", self.client_id, self.settings.host,
                 self.settings.port, getattr(flags, "session_present", None))
        for listener in listeners:
            self._safely(listener)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()
        if self._state is not ConnectionState.CLOSED:
            self._state = ConnectionState.DISCONNECTED
        if not self._stop.is_set():
            log.warning("%s: disconnected (%s)", self.client_id, reason_code)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._pending_lock:
            handle = self._pending.pop(mid, None)
            if handle is None:
                self._acked_early[mid] = reason_code  # acked before publish() registered it
        if handle is not None:
            handle._complete(reason_code)

    def _on_message(self, client, userdata, msg: paho.MQTTMessage) -> None:
        incoming = IncomingMessage(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain))
        sub_ids = getattr(msg.properties, "SubscriptionIdentifier", None) if self._v5 else None
        if isinstance(sub_ids, int):
            sub_ids = [sub_ids]
        with self._lock:
            if sub_ids:
                handlers = [h for (_q, h, i) in self._subs.values() if i in sub_ids]
            else:
                handlers = [h for f, (_q, h, _i) in self._subs.items() if paho.topic_matches_sub(f, msg.topic)]
        for handler in handlers:
            self._safely(handler, incoming)

    def _safely(self, fn: Callable, *args: object) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("%s: handler %r failed; the connection carries on", self.client_id, fn)

    # --- supervisor -----------------------------------------------------------------

    def _open_socket(self) -> None:
        s = self.settings
        if not self._ever_connected_socket:
            props = None
            if self._v5:
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = s.session_expiry_s
                self._client.connect(s.host, s.port, keepalive=s.keepalive_s, clean_start=False, properties=props)
            else:
                self._client.connect(s.host, s.port, keepalive=s.keepalive_s)
            self._ever_connected_socket = True
        else:
            self._client.reconnect()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._socket_open:
                self._state = ConnectionState.CONNECTING
                try:
                    self._open_socket()
                    self._socket_open = True
                except (OSError, ValueError) as exc:
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    self._state = ConnectionState.DISCONNECTED
                    delay = self._backoff.next()
                    log.debug("%s: connect failed (%s); retry in %.2f s", self.client_id, self.last_error, delay)
                    self._stop.wait(delay)
                    continue
            try:
                rc = self._client.loop(timeout=0.2)
            except Exception as exc:  # a bug in a callback is caught above; this is paho itself
                log.exception("%s: network loop error", self.client_id)
                rc = paho.MQTT_ERR_UNKNOWN
                self.last_error = str(exc)
            if rc != paho.MQTT_ERR_SUCCESS and not self._stop.is_set():
                self._socket_open = False
                self._connected.clear()
                self._state = ConnectionState.DISCONNECTED
                delay = self._backoff.next()
                log.debug("%s: link lost (%s); reconnect in %.2f s", self.client_id, rc, delay)
                self._stop.wait(delay)
        # drain the DISCONNECT packet
        deadline = time.monotonic() + 1.0
        while self._socket_open and time.monotonic() < deadline:
            if self._client.loop(timeout=0.05) != paho.MQTT_ERR_SUCCESS:
                break

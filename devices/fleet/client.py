"""What a technician does to nodes over MQTT: list them, send signed commands, read logs.

The fleet client is a short-lived MQTT session: it reads the retained `status`,
`telemetry` and `config` of every node (so a listing is complete as soon as the broker
has replayed them), and waits for the `ack` of the commands it sends.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from .. import errors
from .. import protocol as p
from ..mqtt import MqttClient, MqttSettings


@dataclass
class NodeView:
    """What the broker knows about one node right now."""

    device_id: str
    online: bool | None = None
    last_seen_ms: int | None = None
    version: str | None = None
    volume: int | None = None
    now_playing: str | None = None
    schedule_versions: dict[str, int] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)
    telemetry: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"device_id": self.device_id, "online": self.online, "last_seen_ms": self.last_seen_ms,
                "version": self.version, "volume": self.volume, "now_playing": self.now_playing,
                "schedule_versions": self.schedule_versions, "groups": self.groups}


@dataclass(frozen=True)
class CommandResult:
    cmd_id: str
    device_id: str
    status: p.AckStatus
    reason: str | None
    detail: str | None
    result: dict[str, Any] | None
    round_trip_ms: float


class FleetTimeout(errors.ThanthienError, TimeoutError):
    """A node did not answer in time."""


class UnknownDevice(errors.ThanthienError, LookupError):
    """The broker has never heard of this device (no retained status)."""


class FleetClient:
    """A technician's session with the broker. Use as a context manager."""

    def __init__(self, site: str, settings: MqttSettings, key: p.SigningKey | None = None,
                 client_id: str | None = None):
        self.topics = p.Topics(site)
        self.key = key
        self._mqtt = MqttClient(settings, client_id or f"fleet-{uuid.uuid4().hex[:10]}")
        self._nodes: dict[str, NodeView] = {}
        self._lock = threading.Lock()
        self._last_change = time.monotonic()
        self._acks: dict[str, queue.Queue] = {}
        self._logs: dict[str, queue.Queue] = {}
        for channel in (p.Channel.STATUS, p.Channel.TELEMETRY, p.Channel.CONFIG):
            self._mqtt.subscribe(self.topics.devices_filter(channel), self._on_report)
        self._mqtt.subscribe(self.topics.devices_filter(p.Channel.ACK), self._on_ack)
        self._mqtt.subscribe(self.topics.devices_filter(p.Channel.LOGS), self._on_logs)

    def connect(self, timeout: float = 5.0) -> "FleetClient":
        self._mqtt.connect(timeout)
        return self

    def close(self) -> None:
        self._mqtt.close(timeout=1.0)

    def __enter__(self) -> "FleetClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- listing ----------------------------------------------------------------------

    def _node(self, device_id: str) -> NodeView:
        node = self._nodes.get(device_id)
        if node is None:
            node = self._nodes[device_id] = NodeView(device_id)
        return node

    def _on_report(self, msg) -> None:
        try:
            ref = self.topics.parse(msg.topic)
        except errors.ProtocolError:
            return
        if not msg.payload:
            return  # a cleared retained message
        with self._lock:
            node = self._node(ref.target)
            self._last_change = time.monotonic()
            if ref.channel is p.Channel.STATUS:
                try:
                    st = p.parse_report(p.Channel.STATUS, msg.payload)
                except errors.ProtocolError:
                    return
                node.online = st.state is p.NodeState.ONLINE
                node.last_seen_ms = max(node.last_seen_ms or 0, st.at)
                node.version = st.version or node.version
                if st.schedule_versions:
                    node.schedule_versions = dict(st.schedule_versions)
            elif ref.channel is p.Channel.TELEMETRY:
                try:
                    tel = json.loads(msg.payload)
                except ValueError:
                    return
                if not isinstance(tel, dict):
                    return
                node.telemetry = tel
                at = tel.get("at")
                if isinstance(at, int):
                    node.last_seen_ms = max(node.last_seen_ms or 0, at)
                node.version = tel.get("version") or node.version
                if isinstance(tel.get("volume"), int):
                    node.volume = tel["volume"]
                np = tel.get("now_playing")
                node.now_playing = (np.get("title") or np.get("occurrence_id")) if isinstance(np, dict) else np
                if isinstance(tel.get("schedule_versions"), dict):
                    node.schedule_versions = tel["schedule_versions"]
            elif ref.channel is p.Channel.CONFIG:
                try:
                    raw = json.loads(msg.payload)
                    node.groups = list(raw["body"]["groups"])
                except (ValueError, KeyError, TypeError):
                    return

    def snapshot(self, settle_s: float = 0.3, max_wait_s: float = 3.0) -> list[NodeView]:
        """Nodes as the broker knows them, once retained messages stop arriving."""
        deadline = time.monotonic() + max_wait_s
        while time.monotonic() < deadline:
            with self._lock:
                quiet = time.monotonic() - self._last_change
            if quiet >= settle_s:
                break
            time.sleep(min(0.05, settle_s))
        with self._lock:
            return sorted((NodeView(**vars(n)) for n in self._nodes.values()), key=lambda n: n.device_id)

    def known(self, device_id: str, settle_s: float = 0.3) -> bool:
        return any(n.device_id == device_id for n in self.snapshot(settle_s))

    # --- commands ---------------------------------------------------------------------

    def _on_ack(self, msg) -> None:
        try:
            ref = self.topics.parse(msg.topic)
            ack = p.parse_report(p.Channel.ACK, msg.payload)
        except errors.ProtocolError:
            return
        q = self._acks.get(ack.cmd_id)
        if q is not None:
            q.put((ref.target, ack, time.monotonic()))

    def _on_logs(self, msg) -> None:
        try:
            report = p.parse_report(p.Channel.LOGS, msg.payload)
        except errors.ProtocolError:
            return
        q = self._logs.get(report.cmd_id)
        if q is not None:
            q.put(report)

    def send(self, device_id: str, msg_type: p.MessageType, body: dict | None = None, *,
             priority: p.Priority = p.Priority.NORMAL, timeout: float = 5.0,
             until: tuple[p.AckStatus, ...] = (p.AckStatus.DONE, p.AckStatus.REJECTED, p.AckStatus.FAILED),
             require_known: bool = True) -> CommandResult:
        """Sign and send one command to one device; return its final ack."""
        if self.key is None:
            raise errors.ConfigError(["signing_key: the fleet tools need the station's signing key to send commands"])
        p.validate_id(device_id, "device id")
        if require_known and not self.known(device_id):
            raise UnknownDevice(f"thiết bị {device_id!r} chưa từng kết nối tới broker (không có trạng thái)")
        cmd_id = str(uuid.uuid4())
        q: queue.Queue = queue.Queue()
        self._acks[cmd_id] = q
        try:
            payload = p.encode_envelope(self.key, msg_type, body or {}, priority=priority, msg_id=cmd_id,
                                        ttl_ms=max(int(timeout * 1000), 30_000))
            t0 = time.monotonic()
            self._mqtt.publish(self.topics.device(device_id, p.Channel.CMD), payload).wait(timeout)
            deadline = t0 + timeout
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise FleetTimeout(f"{device_id} không trả lời lệnh {msg_type.value} trong {timeout:g} s")
                try:
                    target, ack, when = q.get(timeout=remaining)
                except queue.Empty:
                    continue
                if target != device_id:
                    continue
                if ack.status in until:
                    return CommandResult(cmd_id, device_id, ack.status, ack.reason, ack.detail, ack.result,
                                         (when - t0) * 1000)
        finally:
            self._acks.pop(cmd_id, None)

    def logs(self, device_id: str, lines: int = 100, timeout: float = 5.0) -> list[str]:
        if self.key is None:
            raise errors.ConfigError(["signing_key: the fleet tools need the station's signing key to send commands"])
        if not self.known(device_id):
            raise UnknownDevice(f"thiết bị {device_id!r} chưa từng kết nối tới broker (không có trạng thái)")
        cmd_id = str(uuid.uuid4())
        q: queue.Queue = queue.Queue()
        self._logs[cmd_id] = q
        try:
            payload = p.encode_envelope(self.key, p.MessageType.LOGS, {"lines": lines}, msg_id=cmd_id)
            self._mqtt.publish(self.topics.device(device_id, p.Channel.CMD), payload).wait(timeout)
            try:
                return list(q.get(timeout=timeout).lines)
            except queue.Empty:
                raise FleetTimeout(f"{device_id} không gửi nhật ký trong {timeout:g} s") from None
        finally:
            self._logs.pop(cmd_id, None)

    def read_config(self, device_id: str, timeout: float = 3.0) -> p.Envelope | None:
        """The device's retained config document, verified against our key."""
        got: queue.Queue = queue.Queue()
        topic = self.topics.device(device_id, p.Channel.CONFIG)
        self._mqtt.subscribe(topic, got.put)
        try:
            msg = got.get(timeout=timeout)
        except queue.Empty:
            return None
        finally:
            self._mqtt.unsubscribe(topic)
        keys = [self.key.public] if self.key else []
        return p.Verifier(keys).verify(msg.payload)

    def publish_config(self, body: p.ConfigBody, timeout: float = 5.0) -> None:
        if self.key is None:
            raise errors.ConfigError(["signing_key: needed to sign a config"])
        payload = p.encode_envelope(self.key, p.MessageType.CONFIG, body, ttl_ms=None)
        self._mqtt.publish(self.topics.device(body.device_id, p.Channel.CONFIG), payload, retain=True).wait(timeout)

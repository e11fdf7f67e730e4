"""Real things for agent tests: an HTTP media server, audio files, and a station stand-in
that signs and publishes over the real broker and collects what nodes report."""

from __future__ import annotations

import hashlib
import http.server
import json
import queue
import struct
import threading
import time
import wave
from dataclasses import dataclass
from pathlib import Path

from devices import protocol as p
from devices.audio import tone
from devices.config import toml_string
from devices.mqtt import MqttClient, MqttSettings

SITE = "phuong-test"
RATE, CHANNELS = 22050, 1


@dataclass(frozen=True)
class Media:
    path: Path
    sha256: str
    size: int
    url: str

    def ref(self) -> dict:
        return {"url": self.url, "sha256": self.sha256, "bytes": self.size}


class MediaServer:
    """Serves a directory over HTTP on loopback, counting requests per path."""

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.hits: dict[str, int] = {}
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(outer.dir), **kw)

            def do_GET(self):
                outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.httpd.server_port}"

    def add_wav(self, name: str, seconds: float, freq: float = 440.0, rate: int = RATE) -> Media:
        path = self.dir / name
        pcm = tone(freq, int(seconds * 1000), rate, 1, amplitude=0.6)
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(pcm)
        return self.media(name)

    def add_bytes(self, name: str, data: bytes) -> Media:
        (self.dir / name).write_bytes(data)
        return self.media(name)

    def media(self, name: str) -> Media:
        data = (self.dir / name).read_bytes()
        return Media(self.dir / name, hashlib.sha256(data).hexdigest(), len(data), f"{self.base}/{name}")

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def write_agent_config(path: Path, *, device_id: str, data_dir: Path, key: p.SigningKey, port: int,
                       sink: str, amp_pin: int | None = None, extra: str = "", protocol: str = "5") -> Path:
    text = (f"site = {toml_string(SITE)}\ndevice_id = {toml_string(device_id)}\n"
            f"data_dir = {toml_string(data_dir)}\nstation_keys = [{toml_string(key.public.to_text())}]\n"
            f"telemetry_interval_s = 2\n{extra}\n"
            f"[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nprotocol = \"{protocol}\"\n"
            "reconnect_min_s = 0.05\nreconnect_max_s = 0.5\n"
            f"[audio]\nsink = {toml_string(sink)}\nsample_rate = {RATE}\nchannels = {CHANNELS}\nfade_ms = 100\n"
            f"[amp]\nwarmup_ms = 0\ntail_ms = 0\n" + (f"pin = {amp_pin}\n" if amp_pin is not None else "")
            + "[logging]\nlevel = \"INFO\"\n")
    path.write_text(text)
    return path


class Station:
    """Signs and publishes like the station; collects acks, events and statuses."""

    def __init__(self, settings: MqttSettings, key: p.SigningKey | None = None):  # noqa: D107
        self.key = key or p.SigningKey.generate()
        self.topics = p.Topics(SITE)
        self.acks: queue.Queue = queue.Queue()
        self.events: queue.Queue = queue.Queue()
        self.statuses: queue.Queue = queue.Queue()
        self.logs: queue.Queue = queue.Queue()
        self.all_events: list[tuple[str, p.EventReport]] = []
        self.client = MqttClient(settings, f"station-sim-{id(self)}")
        self.client.subscribe(self.topics.devices_filter(p.Channel.ACK), self._collect(self.acks, p.Channel.ACK))
        self.client.subscribe(self.topics.devices_filter(p.Channel.EVENTS), self._collect(self.events, p.Channel.EVENTS))
        self.client.subscribe(self.topics.devices_filter(p.Channel.STATUS),
                              self._collect(self.statuses, p.Channel.STATUS))
        self.client.subscribe(self.topics.devices_filter(p.Channel.LOGS), self._collect(self.logs, p.Channel.LOGS))
        self.client.connect()
        time.sleep(0.2)

    def _collect(self, q: queue.Queue, channel: p.Channel):
        def handler(msg):
            device = self.topics.parse(msg.topic).target
            if not msg.payload:
                return
            report = p.parse_report(channel, msg.payload)
            if channel is p.Channel.EVENTS:
                self.all_events.append((device, report))
            q.put((device, report))
        return handler

    def send(self, device: str, msg_type: str, body: dict, *, priority: p.Priority = p.Priority.NORMAL,
             topic: str | None = None, **kw) -> str:
        msg_id = kw.pop("msg_id", None) or __import__("uuid").uuid4().__str__()
        payload = p.encode_envelope(self.key, msg_type, body, priority=priority, msg_id=msg_id, **kw)
        self.client.publish_and_wait(topic or self.topics.device(device, p.Channel.CMD), payload)
        return msg_id

    def publish_config(self, device: str, version: int, groups: list[str], **body) -> None:
        payload = p.encode_envelope(self.key, "config", {"version": version, "device_id": device, "groups": groups,
                                                          **body}, ttl_ms=None)
        self.client.publish_and_wait(self.topics.device(device, p.Channel.CONFIG), payload, retain=True)

    def publish_schedule(self, target: str, version: int, items: list[dict]) -> None:
        scope, _, ident = target.partition("/")
        topic = (self.topics.group(ident, p.Channel.SCHEDULE) if scope == "groups"
                 else self.topics.device(ident, p.Channel.SCHEDULE))
        body = {"version": version, "target": target, "horizon_end": p.now_ms() + 48 * 3600 * 1000, "items": items}
        payload = p.encode_envelope(self.key, "schedule", body, ttl_ms=48 * 3600 * 1000)
        self.client.publish_and_wait(topic, payload, retain=True)

    def wait_ack(self, cmd_id: str, statuses=("done", "rejected", "failed"), timeout: float = 30.0) -> p.AckReport:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                _dev, ack = self.acks.get(timeout=0.2)
            except queue.Empty:
                continue
            if ack.cmd_id == cmd_id and ack.status.value in statuses:
                return ack
        raise AssertionError(f"no ack {statuses} for {cmd_id}")

    def wait_event(self, predicate, timeout: float = 30.0) -> tuple[str, p.EventReport]:
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            try:
                dev, ev = self.events.get(timeout=0.2)
            except queue.Empty:
                continue
            seen.append((dev, ev.type.value, ev.occurrence_id))
            if predicate(dev, ev):
                return dev, ev
        raise AssertionError(f"event not seen; saw {seen}")

    def wait_status(self, device: str, predicate=lambda s: True, timeout: float = 30.0) -> p.StatusReport:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                dev, st = self.statuses.get(timeout=0.2)
            except queue.Empty:
                continue
            if dev == device and predicate(st):
                return st
        raise AssertionError(f"no matching status from {device}")

    def close(self) -> None:
        self.client.close(timeout=0.5)


def read_wav(path: Path) -> tuple[bytes, int, int]:
    with wave.open(str(path), "rb") as w:
        return w.readframes(w.getnframes()), w.getframerate(), w.getnchannels()


def dominant_frequency(pcm: bytes, rate: int) -> float:
    """Zero-crossing estimate of a pure tone's frequency."""
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm[: len(pcm) // 2 * 2])
    crossings = sum(1 for a, b in zip(samples, samples[1:]) if (a < 0) != (b < 0))
    return crossings / 2 / (len(samples) / rate) if samples else 0.0


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def dumps(obj) -> str:
    return json.dumps(obj)


class NoAmp:
    """An amplifier stand-in for player tests that need no relay."""

    is_on = False

    def acquire(self):
        pass

    def release(self):
        pass

    def off_now(self):
        pass

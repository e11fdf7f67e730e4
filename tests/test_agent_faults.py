"""Fault tests: the agent as a real process, the broker stopped, kill -9, hostile payloads."""

from __future__ import annotations

import http.server
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from devices import protocol as p
from tests.agent_support import (RATE, MediaServer, Station, dominant_frequency, read_wav, wait_for,
                                 write_agent_config)

pytestmark = [pytest.mark.broker, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
DEVICE = "loa-02"


class AgentProcess:
    def __init__(self, cfg: Path, log: Path):
        self.cfg, self.log = cfg, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> "AgentProcess":
        out = open(self.log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "thanthien", "speaker", "--config", str(self.cfg)],
                                     cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        return self

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 10) -> float:
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout)
        return time.monotonic() - t0

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def env(tmp_path, broker, mqtt_settings):
    media = MediaServer(tmp_path / "www")
    station = Station(mqtt_settings)
    data = tmp_path / "node"
    cfg = write_agent_config(tmp_path / "node.toml", device_id=DEVICE, data_dir=data, key=station.key,
                             port=broker.port, sink=f"wav:{data / 'out.wav'}")
    agents: list[AgentProcess] = []

    def spawn() -> AgentProcess:
        a = AgentProcess(cfg, tmp_path / "agent.log").start()
        agents.append(a)
        return a

    yield {"media": media, "station": station, "data": data, "spawn": spawn, "broker": broker,
           "log": tmp_path / "agent.log"}
    for a in agents:
        a.stop()
    station.close()
    media.close()


def online(station: Station) -> None:
    station.wait_status(DEVICE, lambda s: s.state is p.NodeState.ONLINE, timeout=60)


def test_plays_on_time_with_the_broker_down_and_reports_after(env):
    station, media, broker = env["station"], env["media"], env["broker"]
    agent = env["spawn"]()
    online(station)
    m = media.add_wav("chieu.wav", 1.0, 550)
    start = p.now_ms() + 35_000
    station.publish_schedule(f"devices/{DEVICE}", 1, [{"occurrence_id": "occ-out", "start_at": start,
                                                      "media": m.ref(), "broadcast_id": "b-out"}])
    station.wait_event(lambda d, e: e.type is p.EventType.SCHEDULE_APPLIED)
    assert wait_for(lambda: (env["data"] / "media" / m.sha256).exists(), 20)  # fetched ahead of time
    wait_s = (start - 30_000 - p.now_ms()) / 1000
    assert wait_s > 0, "set-up took too long for a 30 s outage"
    time.sleep(wait_s)
    broker.stop()  # 30 s before the occurrence
    time.sleep(max(0, (start - p.now_ms()) / 1000) + 3)
    assert agent.proc.poll() is None
    pcm, rate, _ = read_wav(env["data"] / "out.wav")  # it played with no network
    assert len(pcm) >= rate * 2 * 0.9 and abs(dominant_frequency(pcm, rate) - 550) < 30
    broker.start()
    _d, started = station.wait_event(lambda d, e: e.type is p.EventType.PLAY_STARTED and e.occurrence_id == "occ-out",
                                     timeout=60)
    assert abs(started.started_at - start) < 1000
    station.wait_event(lambda d, e: e.type is p.EventType.PLAY_FINISHED and e.occurrence_id == "occ-out", timeout=60)


def test_kill9_during_playback_keeps_state_and_outbox(env):
    station, media, broker = env["station"], env["media"], env["broker"]
    agent = env["spawn"]()
    online(station)
    m = media.add_wav("long.wav", 6.0, 330)
    start = p.now_ms() + 4000
    station.publish_schedule(f"devices/{DEVICE}", 1, [
        {"occurrence_id": "occ-long", "start_at": start, "media": m.ref()},
        {"occurrence_id": "occ-gone", "start_at": start + 8000, "media": m.ref()}])
    station.wait_event(lambda d, e: e.type is p.EventType.PLAY_STARTED and e.occurrence_id == "occ-long", timeout=60)
    broker.stop()  # events from now on can only wait in the outbox
    time.sleep(1.0)
    agent.kill9()
    db = env["data"] / "agent.db"
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    time.sleep(max(0, (start + 8000 - p.now_ms()) / 1000) + 3)  # the second occurrence passes while it is dead
    broker.start()
    env["spawn"]()
    _d, ev = station.wait_event(lambda d, e: e.type is p.EventType.INTERRUPTED and e.occurrence_id == "occ-long",
                                timeout=60)
    assert "restarted" in ev.reason
    _d, missed = station.wait_event(lambda d, e: e.type is p.EventType.MISSED and e.occurrence_id == "occ-gone",
                                    timeout=60)
    time.sleep(1)
    kinds = [(e.type, e.occurrence_id) for _dev, e in station.all_events]
    assert kinds.count((p.EventType.PLAY_STARTED, "occ-long")) == 1  # not replayed after the crash
    assert (p.EventType.PLAY_STARTED, "occ-gone") not in kinds        # missed, not played late


class SlowHandler(http.server.BaseHTTPRequestHandler):
    data = b""
    slow = True

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.data)))
        self.end_headers()
        half = len(self.data) // 2
        self.wfile.write(self.data[:half])
        self.wfile.flush()
        if type(self).slow:
            time.sleep(30)
        self.wfile.write(self.data[half:])

    def log_message(self, *args):
        pass


def test_kill9_during_download_leaves_nothing_trusted(env, tmp_path):
    station = env["station"]
    m = env["media"].add_wav("slow.wav", 2.0, 700)
    SlowHandler.data = m.path.read_bytes()
    SlowHandler.slow = True
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        ref = {"url": f"http://127.0.0.1:{srv.server_port}/slow.wav", "sha256": m.sha256, "bytes": m.size}
        agent = env["spawn"]()
        online(station)
        station.send(DEVICE, "play", {"media": ref, "occurrence_id": "dl-1"})
        media_dir = env["data"] / "media"
        assert wait_for(lambda: any(f.name.endswith(".part") for f in media_dir.iterdir()), 30)
        agent.kill9()
        assert not (media_dir / m.sha256).exists()
        SlowHandler.slow = False
        env["spawn"]()
        online(station)
        assert wait_for(lambda: not any(f.name.endswith(".part") for f in media_dir.iterdir()), 30)
        cmd = station.send(DEVICE, "play", {"media": ref, "occurrence_id": "dl-2"})
        assert station.wait_ack(cmd, timeout=60).status is p.AckStatus.DONE
        assert (media_dir / m.sha256).exists()
        pcm, rate, _ = read_wav(env["data"] / "out.wav")
        assert abs(dominant_frequency(pcm, rate) - 700) < 30
    finally:
        srv.shutdown()


def hostile_payloads(key: p.SigningKey, n: int, rng: random.Random) -> list[bytes]:
    forged_key = p.SigningKey.generate()
    base = [
        b"", b"\x00" * 10, b"{", b"[]", b"null", b"1e999999", b'"' + b"\\" * 1000 + b'"',
        b"[" * 5000 + b"]" * 5000, b'{"v":1,"id":"' + b"A" * 10000 + b'"}',
        json.dumps({"v": 1, "id": str(uuid.uuid4()), "type": "play", "issued_at": "now"}).encode(),
        b"{" + b" " * (300 * 1024) + b"}",
        "{\"ký tự\": \"\ud800\"}".encode("utf-8", "surrogatepass"),
        p.encode_envelope(forged_key, "play", {"media": {"url": "http://x/a", "sha256": "a" * 64, "bytes": 1}}),
        p.encode_envelope(key, "play", {"media": {"url": "file:///etc/shadow", "sha256": "a" * 64, "bytes": 1}}),
        p.encode_envelope(key, "play", {"media": {"url": "http://x/a", "sha256": "../../etc/passwd", "bytes": 1}}),
        p.encode_envelope(key, "volume", {"volume": -1}),
        p.encode_envelope(key, "restart", {"reason": "x" * 5000}),
        p.encode_envelope(key, "schedule", {"version": 1, "target": "devices/other", "horizon_end": 1, "items": []}),
        p.encode_envelope(key, "config", {"version": 1, "device_id": "someone-else"}, ttl_ms=None),
        p.encode_envelope(key, "ping", {}, issued_at=p.now_ms() - 10 * 3600 * 1000),
    ]
    out = list(base)
    while len(out) < n:
        out.append(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 400))))
    return out[:n]


def test_hostile_payloads_on_every_topic_are_rejected_and_the_agent_survives(env):
    station = env["station"]
    agent = env["spawn"]()
    online(station)
    station.publish_config(DEVICE, 1, ["to-9"])
    time.sleep(1.0)
    t = station.topics
    topics = t.inbound_for_node(DEVICE, ["to-9"])
    rng = random.Random(42)
    payloads = hostile_payloads(station.key, 200, rng)
    sent = 0
    for topic in topics:
        for payload in payloads:
            station.client.publish(topic, payload)
            sent += 1
    non_empty = sum(1 for pl in payloads if pl) * len(topics)
    rejected = 0
    deadline = time.monotonic() + 180
    while rejected < non_empty and time.monotonic() < deadline:
        try:
            _d, ack = station.acks.get(timeout=1)
        except Exception:
            continue
        if ack.status is p.AckStatus.REJECTED:
            assert ack.reason
            rejected += 1
    assert rejected == non_empty
    assert agent.proc.poll() is None
    cmd = station.send(DEVICE, "ping", {"nonce": "still-alive"})
    assert station.wait_ack(cmd).result["nonce"] == "still-alive"
    assert "Traceback" not in env["log"].read_text(errors="replace")


def test_sigterm_stops_within_two_seconds_with_amp_off_and_offline_status(env):
    station, media = env["station"], env["media"]
    agent = env["spawn"]()
    online(station)
    m = media.add_wav("stop.wav", 10.0)
    station.send(DEVICE, "play", {"media": m.ref()})
    station.wait_event(lambda d, e: e.type is p.EventType.PLAY_STARTED)
    took = agent.terminate()
    assert agent.proc.returncode == 0
    assert took < 2.5, took
    st = station.wait_status(DEVICE, lambda s: s.state is p.NodeState.OFFLINE)
    assert st.reason == "stopped"

"""The MQTT wrapper against a real Mosquitto: pub/sub, birth and will, reconnect, PUBACK waits."""

from __future__ import annotations

import json
import queue
import random
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from devices import errors
from devices import protocol as p
from devices.broker import free_port
from devices.mqtt import Backoff, ConnectionState, MqttClient, MqttSettings, OutgoingMessage

pytestmark = pytest.mark.broker

SITE = "phuong-test"


def wait_for(predicate, timeout=20.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class Inbox:
    """Collects messages from a subscription; get() waits."""

    def __init__(self):
        self.q: queue.Queue = queue.Queue()

    def __call__(self, msg):
        self.q.put(msg)

    def get(self, timeout=20.0):
        return self.q.get(timeout=timeout)

    def drain(self, n, timeout=20.0):
        return [self.get(timeout) for _ in range(n)]

    def empty_for(self, seconds):
        try:
            self.q.get(timeout=seconds)
            return False
        except queue.Empty:
            return True


@pytest.fixture
def client_factory(mqtt_settings):
    made = []

    def make(client_id=None, settings=None, **kw):
        c = MqttClient(settings or mqtt_settings, client_id or f"t-{uuid.uuid4().hex[:8]}", **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close(timeout=0.5)


def test_publish_subscribe_round_trip(client_factory):
    inbox = Inbox()
    sub = client_factory()
    sub.subscribe("thanthien/v1/x/#", inbox)
    sub.connect()
    pub = client_factory().connect()
    assert wait_for(lambda: sub.connected)
    time.sleep(0.1)  # SUBACK
    pub.publish_and_wait("thanthien/v1/x/a", "xin chào", timeout=10)
    msg = inbox.get()
    assert msg.topic == "thanthien/v1/x/a" and msg.payload.decode() == "xin chào" and msg.qos == 1


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_both_protocol_versions(client_factory, mqtt_settings, protocol):
    settings = MqttSettings(host=mqtt_settings.host, port=mqtt_settings.port, protocol=protocol)
    inbox = Inbox()
    sub = client_factory(settings=settings)
    sub.subscribe("v/#", inbox)
    sub.connect()
    time.sleep(0.1)
    client_factory(settings=settings).connect().publish_and_wait("v/1", b"ok")
    assert inbox.get().payload == b"ok"


def test_birth_and_retained_will_after_sigkill(broker, client_factory, tmp_path):
    status_topic = p.Topics(SITE).device("loa-01", p.Channel.STATUS)
    script = tmp_path / "node.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        from devices.mqtt import MqttClient, MqttSettings, OutgoingMessage
        s = MqttSettings(port={broker.port})
        c = MqttClient(s, "loa-01",
                       birth=OutgoingMessage({status_topic!r}, b'{{"state":"online"}}', 1, True),
                       will=OutgoingMessage({status_topic!r}, b'{{"state":"offline"}}', 1, True))
        c.connect()
        print("up", flush=True)
        time.sleep(600)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, cwd=str(p.__file__).rsplit("/devices", 1)[0])
    try:
        assert proc.stdout.readline().strip() == b"up"
        inbox = Inbox()
        watcher = client_factory()
        watcher.subscribe(status_topic, inbox)
        watcher.connect()
        first = inbox.get()
        assert first.retain and json.loads(first.payload)["state"] == "online"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        will = inbox.get()
        assert json.loads(will.payload)["state"] == "offline"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    # a newcomer sees the retained offline
    late = Inbox()
    c = client_factory()
    c.subscribe(status_topic, late)
    c.connect()
    msg = late.get()
    assert msg.retain and json.loads(msg.payload)["state"] == "offline"


def test_graceful_close_publishes_farewell(client_factory):
    topic = "thanthien/v1/x/devices/a/status"
    inbox = Inbox()
    watcher = client_factory()
    watcher.subscribe(topic, inbox)
    watcher.connect()
    node = client_factory(birth=OutgoingMessage(topic, b"online", 1, True),
                          will=OutgoingMessage(topic, b"offline", 1, True)).connect()
    assert inbox.get().payload == b"online"
    node.close()
    assert inbox.get().payload == b"offline"
    assert node.state is ConnectionState.CLOSED


def test_publish_while_broker_down_is_delivered_after_restart(broker, client_factory):
    inbox = Inbox()
    sub = client_factory()
    sub.subscribe("q/#", inbox)
    sub.connect()
    pub = client_factory().connect()
    time.sleep(0.1)
    broker.stop()
    assert wait_for(lambda: not pub.connected)
    handles = [pub.publish(f"q/{i}", str(i).encode()) for i in range(5)]
    assert not any(h.acknowledged for h in handles)
    with pytest.raises(errors.PublishTimeout):
        handles[0].wait(0.3)
    broker.start()
    for h in handles:
        h.wait(20)
    got = sorted(int(m.payload) for m in inbox.drain(5))
    assert got == [0, 1, 2, 3, 4]
    assert pub.connect_count >= 2 and sub.connect_count >= 2


def test_persistent_session_keeps_queued_messages_across_broker_restart(broker, client_factory, mqtt_settings):
    """A node that was offline gets the QoS 1 messages sent meanwhile, even if the broker restarted."""
    first = client_factory("node-persist")
    first.subscribe("cmd/node", Inbox())
    first.connect()
    time.sleep(0.2)
    first.close()
    pub = client_factory().connect()
    for i in range(3):
        pub.publish_and_wait("cmd/node", f"m{i}".encode())
    broker.restart()  # graceful: Mosquitto writes its persistence file
    inbox = Inbox()
    again = MqttClient(mqtt_settings, "node-persist")
    again.subscribe("cmd/node", inbox)
    try:
        again.connect()
        assert [m.payload for m in inbox.drain(3)] == [b"m0", b"m1", b"m2"]
    finally:
        again.close()


def test_resubscribes_after_broker_crash(broker, client_factory):
    """After a kill -9 the broker has forgotten the session: the client must subscribe again."""
    inbox = Inbox()
    sub = client_factory()
    sub.subscribe("r/#", inbox)
    sub.connect()
    broker.kill()
    assert wait_for(lambda: not sub.connected)
    (broker.data_dir / "mosquitto.db").unlink(missing_ok=True)
    broker.start()
    assert wait_for(lambda: sub.connected)
    pub = client_factory().connect()

    def delivered():
        pub.publish_and_wait("r/1", b"again")
        try:
            return inbox.get(timeout=0.5).payload == b"again"
        except queue.Empty:
            return False

    assert wait_for(delivered, timeout=20, interval=0.1)


def test_handler_exception_does_not_kill_the_loop(client_factory):
    inbox = Inbox()

    def boom(msg):
        raise RuntimeError("handler bug")

    sub = client_factory()
    sub.subscribe("h/+", boom)  # fails on every message
    sub.subscribe("h/ok", inbox)
    sub.subscribe("h/boom", inbox)
    sub.connect()
    time.sleep(0.1)
    pub = client_factory().connect()
    pub.publish_and_wait("h/boom", b"1")
    pub.publish_and_wait("h/ok", b"2")
    payloads = {m.payload for m in inbox.drain(2)}
    assert payloads == {b"1", b"2"}
    assert inbox.empty_for(0.3)  # overlapping filters: each handler gets each message once
    assert sub.connected


def test_connect_to_nothing_is_a_clear_error():
    settings = MqttSettings(port=free_port(), reconnect_min_s=0.05, reconnect_max_s=0.2)
    c = MqttClient(settings, "lonely")
    try:
        with pytest.raises(errors.MqttError) as exc:
            c.connect(timeout=1.0)
        assert "cannot reach the MQTT broker" in str(exc.value)
        assert isinstance(exc.value, ConnectionError)
    finally:
        c.close()


def test_backoff_grows_with_jitter_and_resets():
    b = Backoff(0.5, 8.0, random.Random(1))
    delays = [b.next() for _ in range(12)]
    assert all(0.25 <= d <= 8.0 for d in delays)
    assert max(delays[6:]) > max(delays[:2])
    assert len(set(delays)) == len(delays)  # jittered
    b.reset()
    assert b.next() <= 0.5


def test_signed_commands_through_the_broker(client_factory):
    """What a node will do: verify every message and say why it refused the bad ones."""
    key = p.SigningKey.generate()
    verifier = p.Verifier([key.public])
    topics = p.Topics(SITE)
    cmd_topic = topics.device("loa-01", p.Channel.CMD)
    results: queue.Queue = queue.Queue()

    def on_cmd(msg):
        try:
            env = verifier.verify(msg.payload)
            p.check_channel(env, topics.parse(msg.topic))
            results.put(("accepted", env.type.value))
        except errors.ProtocolError as exc:
            results.put(("rejected", exc.reason))

    node = client_factory()
    node.subscribe(cmd_topic, on_cmd)
    node.connect()
    time.sleep(0.1)
    station = client_factory().connect()
    good = p.encode_envelope(key, "volume", {"volume": 40})
    forged = p.encode_envelope(p.SigningKey.generate(), "volume", {"volume": 100})
    forged = json.dumps({**json.loads(forged), "kid": key.kid}).encode()
    expired = p.encode_envelope(key, "stop", {}, issued_at=p.now_ms() - 3_600_000, ttl_ms=60_000)
    oversized = b"{" + b" " * (p.MAX_PAYLOAD_BYTES + 10) + b"}"
    sequence = [(good, ("accepted", "volume")), (good, ("rejected", "replayed")),
                (forged, ("rejected", "bad_signature")), (expired, ("rejected", "expired")),
                (oversized, ("rejected", "oversized")), (b"\x00garbage", ("rejected", "bad_json")),
                (p.encode_envelope(key, "schedule", {"version": 1, "target": "devices/loa-01", "horizon_end": 1}),
                 ("rejected", "wrong_recipient"))]
    for payload, _ in sequence:
        station.publish_and_wait(cmd_topic, payload)
    for _, expected in sequence:
        assert results.get(timeout=20) == expected

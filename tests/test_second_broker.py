"""Broker portability: the MQTT wrapper scenarios and a real speaker agent against NATS
(JetStream + its MQTT listener, MQTT 3.1.1), started from Debian's nats-server on free
ports. Shows that a clustered broker can replace Mosquitto with no code change."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

from devices import protocol as p
from devices.agent.agent import Agent
from devices.broker_nats import NatsMqttProcess
from devices.config import SpeakerConfig, load_config
from devices.mqtt import MqttSettings
from tests.agent_support import MediaServer, Station, read_wav, write_agent_config
from tests.conftest import require_tool
# the same scenarios as against Mosquitto, collected again here with NATS underneath
from tests.test_mqtt import (Inbox, client_factory, test_graceful_close_publishes_farewell,  # noqa: F401
                             test_publish_subscribe_round_trip, test_publish_while_broker_down_is_delivered_after_restart,
                             test_signed_commands_through_the_broker)

pytestmark = [pytest.mark.second_broker, pytest.mark.broker]


@pytest.fixture
def broker(tmp_path_factory):
    require_tool("nats-server")
    b = NatsMqttProcess(tmp_path_factory.mktemp("nats"))
    b.start()
    yield b
    b.kill()


@pytest.fixture
def mqtt_settings(broker) -> MqttSettings:
    return MqttSettings(host=broker.host, port=broker.port, protocol="3.1.1", reconnect_min_s=0.05,
                        reconnect_max_s=0.5)


def test_will_after_sigkill_on_nats(broker, client_factory, tmp_path):
    topic = p.Topics("phuong-test").device("loa-01", p.Channel.STATUS)
    script = tmp_path / "node.py"
    script.write_text(textwrap.dedent(f"""
        import time
        from devices.mqtt import MqttClient, MqttSettings, OutgoingMessage
        s = MqttSettings(port={broker.port}, protocol="3.1.1")
        c = MqttClient(s, "loa-01", birth=OutgoingMessage({topic!r}, b'online', 1, True),
                       will=OutgoingMessage({topic!r}, b'offline', 1, True))
        c.connect(20)
        print("up", flush=True)
        time.sleep(600)
    """))
    from tests.conftest import ROOT

    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, cwd=ROOT)
    try:
        assert proc.stdout.readline().strip() == b"up"
        inbox = Inbox()
        watcher = client_factory()
        watcher.subscribe(topic, inbox)
        watcher.connect(20)
        assert inbox.get().payload == b"online"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert inbox.get().payload == b"offline"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()


def test_a_real_agent_over_nats(broker, mqtt_settings, tmp_path, mock_pins):
    media = MediaServer(tmp_path / "www")
    station = Station(mqtt_settings)
    cfg = write_agent_config(tmp_path / "node.toml", device_id="loa-01", data_dir=tmp_path / "node",
                             key=station.key, port=broker.port, sink=f"wav:{tmp_path / 'node' / 'out.wav'}",
                             protocol="3.1.1")
    agent = Agent(load_config(cfg, SpeakerConfig)).start()
    try:
        assert agent.mqtt.wait_connected(20)
        time.sleep(0.5)
        station.publish_config("loa-01", 1, ["to-1"])
        deadline = time.monotonic() + 20
        while "to-1" not in agent._subscribed_groups and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        m = media.add_wav("nats.wav", 0.8, 600)
        start = p.now_ms() + 3000
        station.publish_schedule("groups/to-1", 1, [{"occurrence_id": "o-nats", "start_at": start, "media": m.ref()}])
        _d, ev = station.wait_event(lambda d, e: e.type is p.EventType.PLAY_FINISHED and e.occurrence_id == "o-nats",
                                    timeout=60)
        assert abs(ev.started_at - start) < 1000
        cmd = station.send("loa-01", "ping", {"nonce": "qua-nats"})
        assert station.wait_ack(cmd).result["nonce"] == "qua-nats"
        pcm, rate, _ = read_wav(tmp_path / "node" / "out.wav")
        assert len(pcm) >= rate * 2 * 0.7
    finally:
        agent.close()
        station.close()
        media.close()

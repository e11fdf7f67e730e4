"""The station service in-process on a real broker: stable document versions, alerts topic."""

from __future__ import annotations

import json
import queue
import time

import pytest

from broadcast import areas
from broadcast.config import StationConfig
from broadcast.db import now_ms
from broadcast.service import StationService
from devices.config import load_config
from devices.mqtt import MqttClient
from tests.station_support import write_station_config

pytestmark = pytest.mark.broker
ADMIN = areas.Actor("admin", areas.Role.ADMIN)


@pytest.fixture
def service(tmp_path, broker):
    cfg_path = write_station_config(tmp_path / "station.toml", tmp_path / "station", broker.port,
                                    extra='alerts_topic = "tinh/giam-sat/alerts"\noffline_alert_minutes = 1')
    svc = StationService(load_config(cfg_path, StationConfig), media_port=0)
    areas.save_group(svc.db, ADMIN, "to-1", "Tổ 1")
    areas.save_device(svc.db, ADMIN, "loa-1", "Loa 1", ["to-1"])
    svc.start()
    assert svc.mqtt.wait_connected(20)
    yield svc
    svc.close()


def versions(svc) -> dict[str, int]:
    return dict(svc.db.execute("SELECT target, version FROM documents").fetchall())


def test_document_versions_change_only_with_content(service):
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(versions(service)) < 3:
        time.sleep(0.1)
    first = versions(service)
    assert set(first) == {"config:devices/loa-1", "devices/loa-1", "groups/to-1"}
    for _ in range(5):
        service.dispatch_once()
    assert versions(service) == first  # nothing changed, nothing republished as new
    areas.save_device(service.db, ADMIN, "loa-1", "Loa 1", ["to-1"], volume=55)
    service.dispatch_once()
    after = versions(service)
    assert after["config:devices/loa-1"] == first["config:devices/loa-1"] + 1
    assert after["devices/loa-1"] == first["devices/loa-1"]


def test_alerts_are_published_for_the_province(service, mqtt_settings):
    got: queue.Queue = queue.Queue()
    with MqttClient(mqtt_settings, "province-monitor") as monitor:
        monitor.subscribe("tinh/giam-sat/alerts", got.put)
        monitor.connect()
        time.sleep(0.3)
        service.db.execute("UPDATE devices SET created_at = ?", [now_ms() - 3_600_000])  # never seen for an hour
        opened = service.check_alerts()
        assert [(a.device_id, a.kind) for a in opened] == [("loa-1", "offline")]
        msg = json.loads(got.get(timeout=10).payload)
        assert msg["device_id"] == "loa-1" and msg["kind"] == "offline" and "mất kết nối" in msg["text"]


def test_key_rotation_reaches_a_real_agent(service, tmp_path, broker, mock_pins):
    """rotate → the node learns the new key from a config signed by the old one →
    finish → the old key is refused by the node."""
    import subprocess
    import sys

    from devices import protocol as p
    from devices.agent.agent import Agent
    from devices.config import SpeakerConfig
    from tests.agent_support import wait_for, write_agent_config
    from tests.station_support import ROOT

    old = service.key
    cfg = write_agent_config(tmp_path / "node.toml", device_id="loa-1", data_dir=tmp_path / "node", key=old,
                             port=broker.port, sink="null")
    agent = Agent(load_config(cfg, SpeakerConfig)).start()
    try:
        assert wait_for(lambda: agent.node_config is not None, 30)
        station_toml = str(tmp_path / "station.toml")
        run = lambda *a: subprocess.run([sys.executable, "-m", "thanthien", "station", "--config", station_toml,  # noqa
                                         *a], capture_output=True, text=True, cwd=ROOT, timeout=60)
        areas.add_user(service.db, "admin", "admin", "Quản trị")
        out = run("key-rotate", "--overlap-days", "1")
        assert out.returncode == 0, out.stderr
        assert wait_for(lambda: len(agent.verifier.key_ids) == 2, 30)  # learned the new key, still trusts the old
        out = run("key-finish")
        assert out.returncode == 2 and "overlap" in out.stderr  # too early
        out = run("key-finish", "--force")
        assert out.returncode == 0, out.stderr
        new_kid = service.keyring.dir.joinpath("keyring.json").read_text()
        assert wait_for(lambda: agent.verifier.key_ids == [json.loads(new_kid)["signer_kid"]], 30)
        with pytest.raises(Exception) as exc:
            agent.verifier.verify(p.encode_envelope(old, "ping", {}))
        assert getattr(exc.value, "reason", "") == "unknown_key"
        assert p.SigningKey.load(service.cfg.signing_key_path).kid != old.kid  # fleet tools sign with the new key
    finally:
        agent.close()

"""The console wired to a running station service on a real broker: an emergency with
uploaded audio goes out at once as a signed, emergency-priority command with the typed
reason audited; technician commands are signed, recorded and refused for other roles."""

from __future__ import annotations

import io
import json
import queue
import wave

import pytest
from fastapi.testclient import TestClient

from broadcast import areas, auth
from broadcast.config import StationConfig
from broadcast.service import StationService
from broadcast.web import create_app
from devices import protocol as p
from devices.audio import tone
from devices.config import load_config
from devices.mqtt import MqttClient
from tests.station_support import write_station_config
from tests.web_support import PASSWORD, logged_in

pytestmark = pytest.mark.broker
ADMIN = areas.Actor("admin", areas.Role.ADMIN)


@pytest.fixture
def console(tmp_path, broker):
    cfg_path = write_station_config(tmp_path / "station.toml", tmp_path / "station", broker.port)
    svc = StationService(load_config(cfg_path, StationConfig), media_port=0)
    for user, role in (("admin", "admin"), ("phochutich", "approver"), ("vanthu", "operator"),
                       ("kythuat", "technician")):
        areas.add_user(svc.db, user, role, user)
        auth.set_password(svc.db, "admin", user, PASSWORD)
    areas.save_group(svc.db, ADMIN, "to-1", "Tổ 1")
    areas.save_group(svc.db, ADMIN, "to-2", "Tổ 2")
    areas.save_device(svc.db, ADMIN, "loa-1", "Loa 1", ["to-1"])
    svc.start()
    assert svc.mqtt.wait_connected(20)
    yield svc, TestClient(create_app(svc))
    svc.close()


def wav() -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(22050)
        w.writeframes(tone(1000, 1200, 22050, 1))
    return buf.getvalue()


def test_emergency_with_uploaded_audio_goes_out_signed_and_audited(console, mqtt_settings):
    svc, c = console
    got: queue.Queue = queue.Queue()
    with MqttClient(mqtt_settings, "listener") as listener:
        listener.subscribe(svc.topics.group("to-2", p.Channel.CMD), got.put)
        listener.connect()
        csrf = logged_in(c, "phochutich")
        r = c.post("/emergency", data={"csrf": csrf, "groups": "to-2", "title": "Lũ quét", "reason": "Mưa lớn",
                                       "confirm": "PHÁT KHẨN CẤP"},
                   files={"audio": ("canh-bao.wav", wav(), "audio/wav")}, follow_redirects=False)
        assert r.status_code == 303, r.text[-2000:]
        oid = r.headers["location"].rsplit("/", 1)[1]
        msg = got.get(timeout=10)
    env = json.loads(msg.payload)
    assert env["type"] == "play" and env["priority"] == int(p.Priority.EMERGENCY)
    assert env["body"]["occurrence_id"] == oid and env["body"]["title"] == "Lũ quét"
    p.Verifier([svc.key.public]).verify(msg.payload)  # signed by the station
    assert svc.db.execute("SELECT cmd_id FROM commands WHERE occurrence_id = ?", [oid]).fetchone()[0] == env["id"]
    live = c.get(f"/api/v1/emergency/{oid}").json()
    assert live["targeted"] == 0 and live["title"] == "Lũ quét"  # to-2 has no node yet
    reason = [e for e in areas.audit_log(svc.db, "bulletin") if e["action"] == "bulletin.emergency_approve"]
    assert reason[-1]["detail"]["reason"] == "Mưa lớn" and reason[-1]["actor"] == "phochutich"
    op = TestClient(c.app)
    logged_in(op, "vanthu")
    assert op.get("/emergency").status_code == 403  # operators may not, by default


def test_technician_commands_are_signed_recorded_and_role_checked(console, mqtt_settings):
    svc, c = console
    got: queue.Queue = queue.Queue()
    with MqttClient(mqtt_settings, "listener2") as listener:
        listener.subscribe(svc.topics.device("loa-1", p.Channel.CMD), got.put)
        listener.connect()
        csrf = logged_in(c, "kythuat")
        r = c.post("/devices/loa-1/command", data={"csrf": csrf, "command": "identify"}, follow_redirects=False)
        assert r.status_code == 303
        env = json.loads(got.get(timeout=10).payload)
    assert env["type"] == "identify"
    assert svc.db.execute("SELECT type, actor FROM commands WHERE cmd_id = ?", [env["id"]]).fetchone() == \
        ("identify", "kythuat")
    bad = c.post("/devices/loa-1/command", data={"csrf": csrf, "command": "format-disk"})
    assert bad.status_code == 422 and "Lệnh: chọn" in bad.text
    unknown = c.post("/devices/loa-9/command", data={"csrf": csrf, "command": "identify"})
    assert unknown.status_code == 404
    assert svc.db.execute("SELECT COUNT(*) FROM commands WHERE target = 'devices/loa-9'").fetchone()[0] == 0
    op = TestClient(c.app)
    ocsrf = logged_in(op, "vanthu")
    assert op.post("/devices/loa-1/command", data={"csrf": ocsrf, "command": "restart"}).status_code == 403

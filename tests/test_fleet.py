"""`thanthien fleet`: enrolment end to end on a real broker, listing, and clear exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from devices import errors
from devices import protocol as p
from devices.broker import MosquittoProcess, find_mosquitto, free_port
from devices.config import SpeakerConfig, load_config, toml_string
from devices.fleet.cli import apply_assignments
from devices.mqtt import MqttClient, MqttSettings, TlsSettings
from tests.conftest import require_tool

pytestmark = pytest.mark.broker
ROOT = Path(__file__).resolve().parent.parent
SITE = "phuong-fleet"


def fleet(config: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "thanthien", "fleet", "--config", str(config), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout)


def write_fleet_config(path: Path, *, key: Path, broker_dir: Path, port: int, tls_port: int,
                       username: str | None = None, password_file: Path | None = None,
                       reload_command: list[str] | None = None) -> Path:
    lines = [f"site = {toml_string(SITE)}", f"signing_key = {toml_string(key)}", "timeout_s = 3.0",
             "[mqtt]", 'host = "127.0.0.1"', f"port = {port}", "reconnect_min_s = 0.05", "reconnect_max_s = 0.3"]
    if username:
        lines += [f"username = {toml_string(username)}", f"password_file = {toml_string(password_file)}"]
    lines += ["[broker]", f"dir = {toml_string(broker_dir)}", 'public_host = "127.0.0.1"', f"tls_port = {tls_port}",
              "reload_command = [" + ", ".join(toml_string(c) for c in (reload_command or [])) + "]"]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def ward(tmp_path):
    """A ward broker set up only with the fleet commands, as a technician would."""
    require_tool("mosquitto", find_mosquitto() is not None)
    key = tmp_path / "station.key"
    p.SigningKey.load_or_create(key)
    broker_dir = tmp_path / "broker"
    port, tls_port = free_port(), free_port()
    cfg = write_fleet_config(tmp_path / "fleet.toml", key=key, broker_dir=broker_dir, port=port, tls_port=tls_port)
    assert fleet(cfg, "certs").returncode == 0
    out = fleet(cfg, "account", "station", "--kind", "station", "--password-file", str(tmp_path / "station.pw"))
    assert out.returncode == 0, out.stderr
    out = fleet(cfg, "account", "tech", "--kind", "technician", "--password-file", str(tmp_path / "tech.pw"))
    assert out.returncode == 0, out.stderr
    conf = tmp_path / "mosquitto.conf"
    data = tmp_path / "data"
    data.mkdir()
    out = fleet(cfg, "broker-config", "--out", str(conf), "--port", str(port), "--data-dir", str(data),
                "--user", os.environ.get("USER", "root"))
    assert out.returncode == 0, out.stderr
    # the rendered file is the broker's whole config: run Mosquitto on it as is
    text = conf.read_text().replace("listener " + str(tls_port) + " 0.0.0.0", "listener " + str(tls_port) + " 127.0.0.1")
    conf.write_text(text)
    broker = MosquittoProcess(data, port=port, template=conf)
    broker.render = lambda: conf.read_text()  # already rendered by `fleet broker-config`
    broker.start()
    tech_cfg = write_fleet_config(tmp_path / "tech.toml", key=key, broker_dir=broker_dir, port=port,
                                  tls_port=tls_port, username="tech", password_file=tmp_path / "tech.pw",
                                  reload_command=["kill", "-HUP", str(broker.proc.pid)])
    yield {"cfg": tech_cfg, "tmp": tmp_path, "broker": broker, "port": port, "tls_port": tls_port,
           "broker_dir": broker_dir, "key": key}
    broker.kill()


def test_enrol_writes_a_ready_node_config_that_connects(ward):
    out_dir = ward["tmp"] / "out"
    res = fleet(ward["cfg"], "enrol", "loa-01", "--group", "to-1", "--out", str(out_dir), "--qr")
    assert res.returncode == 0, res.stderr
    node_toml = out_dir / "loa-01.toml"
    assert node_toml.stat().st_mode & 0o777 == 0o600
    password = tomllib.loads(node_toml.read_text())["mqtt"]["password"]
    assert password not in res.stdout and password not in res.stderr  # nothing secret printed
    assert (out_dir / "loa-01.png").read_bytes()[:4] == b"\x89PNG"
    cfg = load_config(node_toml, SpeakerConfig)
    assert cfg.device_id == "loa-01" and cfg.mqtt.username == "loa-01"
    assert p.VerifyKey.from_text(cfg.station_keys[0]).kid == p.SigningKey.load(ward["key"]).kid
    acl = (ward["broker_dir"] / "acl").read_text()
    assert f"topic read thanthien/v1/{SITE}/groups/to-1/schedule" in acl
    # the node connects over TLS with exactly what enrolment gave it
    settings = MqttSettings(host="127.0.0.1", port=ward["tls_port"], username="loa-01", password=password,
                            tls=TlsSettings(ca_file=ward["broker_dir"] / "certs" / "ca.crt"))
    with MqttClient(settings, "loa-01") as node:
        node.connect(timeout=10)
        node.publish_and_wait(p.Topics(SITE).device("loa-01", p.Channel.STATUS), b"{}")
    shown = fleet(ward["cfg"], "enrol", "loa-02", "--group", "to-1", "--out", str(out_dir), "--show-secret")
    assert "mật khẩu MQTT:" in shown.stdout


def test_enrol_refuses_bad_input(ward):
    for args, expected in ((["LOA 1", "--group", "to-1"], "device id"), (["loa-9", "--group", "to/#"], "group id"),
                           (["loa-9"], "--group")):
        res = fleet(ward["cfg"], "enrol", *args, "--out", str(ward["tmp"]))
        assert res.returncode == 2, res
        assert expected in res.stderr
    assert fleet(ward["cfg"], "enrol", "loa-3", "--group", "to-1", "--out", str(ward["tmp"])).returncode == 0
    again = fleet(ward["cfg"], "enrol", "loa-3", "--group", "to-1", "--out", str(ward["tmp"]))
    assert again.returncode == 2 and "--replace" in again.stderr


def test_revoke_cuts_the_node_off(ward):
    out_dir = ward["tmp"] / "out"
    assert fleet(ward["cfg"], "enrol", "loa-07", "--group", "to-2", "--out", str(out_dir)).returncode == 0
    password = tomllib.loads((out_dir / "loa-07.toml").read_text())["mqtt"]["password"]
    settings = MqttSettings(port=ward["port"], username="loa-07", password=password, reconnect_min_s=0.05)
    with MqttClient(settings, "loa-07a") as node:
        node.connect(timeout=10)
    res = fleet(ward["cfg"], "revoke", "loa-07")
    assert res.returncode == 0, res.stderr
    time.sleep(0.5)
    with MqttClient(settings, "loa-07b") as node:
        with pytest.raises(errors.MqttError):
            node.connect(timeout=2)
    assert fleet(ward["cfg"], "revoke", "loa-07").returncode == 3


def publish_node_state(ward, device_id, status, telemetry=None, groups=("to-1",)):
    key = p.SigningKey.load(ward["key"])
    t = p.Topics(SITE)
    station_pw = (ward["tmp"] / "station.pw").read_text().strip()
    with MqttClient(MqttSettings(port=ward["port"], username="station", password=station_pw), "st-sim") as c:
        c.connect(timeout=10)
        c.publish_and_wait(t.device(device_id, p.Channel.STATUS), json.dumps(status), retain=True)
        if telemetry:
            c.publish_and_wait(t.device(device_id, p.Channel.TELEMETRY), json.dumps(telemetry), retain=True)
        cfg = p.encode_envelope(key, "config", {"version": 1, "device_id": device_id, "groups": list(groups)},
                                ttl_ms=None)
        c.publish_and_wait(t.device(device_id, p.Channel.CONFIG), cfg, retain=True)


def test_ls_reads_retained_state(ward):
    now = p.now_ms()
    publish_node_state(ward, "loa-01", {"state": "online", "at": now, "version": "0.1.0"},
                       {"at": now, "volume": 65, "now_playing": {"title": "Bản tin sáng"},
                        "schedule_versions": {"groups/to-1": 4}})
    publish_node_state(ward, "loa-02", {"state": "offline", "at": now - 60_000}, groups=("to-2",))
    res = fleet(ward["cfg"], "ls", "--json")
    assert res.returncode == 0, res.stderr
    nodes = {n["device_id"]: n for n in json.loads(res.stdout)}
    assert nodes["loa-01"]["online"] is True and nodes["loa-01"]["volume"] == 65
    assert nodes["loa-01"]["now_playing"] == "Bản tin sáng" and nodes["loa-01"]["groups"] == ["to-1"]
    assert nodes["loa-01"]["schedule_versions"] == {"groups/to-1": 4}
    assert nodes["loa-02"]["online"] is False and nodes["loa-02"]["groups"] == ["to-2"]
    table = fleet(ward["cfg"], "ls")
    assert "loa-01" in table.stdout and "2 thiết bị, 1 online" in table.stdout


def test_exit_codes_for_unknown_silent_and_unreachable(ward):
    res = fleet(ward["cfg"], "ping", "loa-ghost")
    assert res.returncode == 3 and "loa-ghost" in res.stderr
    publish_node_state(ward, "loa-mute", {"state": "online", "at": p.now_ms()})
    res = fleet(ward["cfg"], "ping", "loa-mute")
    assert res.returncode == 5 and "không trả lời" in res.stderr
    assert fleet(ward["cfg"], "volume", "loa-mute", "150").returncode == 2
    assert fleet(ward["cfg"], "ping", "LOA/#").returncode == 2
    cfg = write_fleet_config(ward["tmp"] / "nowhere.toml", key=ward["key"], broker_dir=ward["broker_dir"],
                             port=free_port(), tls_port=free_port())
    res = fleet(cfg, "ls")
    assert res.returncode == 4 and "cannot reach the MQTT broker" in res.stderr


def test_config_show_and_set(ward):
    publish_node_state(ward, "loa-05", {"state": "online", "at": p.now_ms()})
    shown = fleet(ward["cfg"], "config", "show", "loa-05")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["config"]["groups"] == ["to-1"]
    res = fleet(ward["cfg"], "config", "set", "loa-05", "volume=55", "groups=to-1,to-3")
    assert res.returncode == 0, res.stderr
    after = json.loads(fleet(ward["cfg"], "config", "show", "loa-05").stdout)
    assert after["version"] == 2 and after["config"]["volume"] == 55 and after["config"]["groups"] == ["to-1", "to-3"]
    bad = fleet(ward["cfg"], "config", "set", "loa-05", "volume=loud")
    assert bad.returncode == 2 and "volume: expected an integer" in bad.stderr


def test_apply_assignments_validates():
    body = p.ConfigBody(version=3, device_id="loa-01", groups=["to-1"])
    new = apply_assignments(body, ["volume=40", "amp.tail_ms=500"])
    assert new.version == 4 and new.volume == 40 and new.amp.tail_ms == 500
    for bad in (["volume=400"], ["groups=to 1"], ["secret=1"], ["novalue"]):
        with pytest.raises(errors.ValidationError):
            apply_assignments(body, bad)


def test_missing_config_is_exit_2(tmp_path):
    res = fleet(tmp_path / "missing.toml", "ls")
    assert res.returncode == 2 and "file not found" in res.stderr


def test_enrol_also_creates_the_station_device_record(ward, tmp_path):
    from broadcast import areas
    from broadcast.db import open_db
    from tests.station_support import write_station_config

    station_cfg = write_station_config(tmp_path / "station.toml", tmp_path / "station", ward["port"])
    admin = areas.Actor("admin", areas.Role.ADMIN)
    db = open_db(tmp_path / "station" / "station.db")
    areas.add_user(db, "admin", "admin", "Quản trị")
    areas.save_group(db, admin, "to-1", "Tổ 1")
    out = fleet(ward["cfg"], "enrol", "loa-21", "--group", "to-1", "--name", "Loa chợ", "--out", str(tmp_path),
                "--station-config", str(station_cfg))
    assert out.returncode == 0, out.stderr
    assert areas.device_groups(db, "loa-21") == ["to-1"]
    # a group the station does not know: refused, and no broker account is left behind
    bad = fleet(ward["cfg"], "enrol", "loa-22", "--group", "to-9", "--out", str(tmp_path),
                "--station-config", str(station_cfg))
    assert bad.returncode == 2 and "to-9" in bad.stderr
    assert "loa-22" not in (ward["broker_dir"] / "accounts.json").read_text()

"""The ward broker config (config/mosquitto/thanthien.conf.in) on a real Mosquitto:
no anonymous access, per-account passwords in Mosquitto's own hash format, an ACL that
confines each device, TLS for off-box clients, and revocation that cuts a device off."""

from __future__ import annotations

import queue
import signal
import subprocess
import time
from pathlib import Path

import pytest

from devices import errors
from devices.broker import PROJECT_ROOT, MosquittoProcess, find_mosquitto, free_port
from devices.fleet.broker_auth import (Account, AccountKind, PasswordFile, hash_password, new_password,
                                        render_acl, verify_password, write_acl)
from devices.fleet.certs import create_ca_and_server
from devices.mqtt import MqttClient, MqttSettings, TlsSettings
from devices.protocol import Channel, Topics
from tests.conftest import require_tool

pytestmark = pytest.mark.broker

SITE = "phuong-an-toan"
T = Topics(SITE)
TEMPLATE = PROJECT_ROOT / "config" / "mosquitto" / "thanthien.conf.in"


class SecureBroker:
    def __init__(self, tmp: Path):
        self.dir = tmp
        self.passwords: dict[str, str] = {}
        self.accounts = [Account("station", AccountKind.STATION), Account("tech", AccountKind.TECHNICIAN),
                         Account("kiosk-01", AccountKind.KIOSK),
                         Account("loa-a", AccountKind.DEVICE, ["to-1"]), Account("loa-b", AccountKind.DEVICE, ["to-2"])]
        self.pwfile = PasswordFile(tmp / "passwd")
        for acc in self.accounts:
            self.passwords[acc.name] = new_password()
            self.pwfile.set(acc.name, self.passwords[acc.name])
        self.pwfile.save()
        write_acl(tmp / "acl", SITE, self.accounts)
        self.certs = create_ca_and_server(tmp / "certs", ["localhost", "127.0.0.1"])
        self.tls_port = free_port()
        self.proc = MosquittoProcess(tmp / "data", template=TEMPLATE, extra={
            "tls_port": self.tls_port, "tls_bind": "127.0.0.1", "password_file": tmp / "passwd",
            "acl_file": tmp / "acl", "cafile": self.certs.ca_cert, "certfile": self.certs.server_cert,
            "keyfile": self.certs.server_key})
        self.proc.start()

    def settings(self, user: str | None, password: str | None = None, tls: bool = False) -> MqttSettings:
        return MqttSettings(port=self.tls_port if tls else self.proc.port, username=user,
                            password=password if password is not None else self.passwords.get(user or ""),
                            tls=TlsSettings(ca_file=self.certs.ca_cert) if tls else None,
                            reconnect_min_s=0.05, reconnect_max_s=0.3)

    def revoke(self, name: str) -> None:
        self.pwfile.remove(name)
        self.pwfile.save()
        self.accounts = [a for a in self.accounts if a.name != name]
        write_acl(self.dir / "acl", SITE, self.accounts)
        self.proc.proc.send_signal(signal.SIGHUP)  # Mosquitto reloads password and ACL files
        time.sleep(0.5)


@pytest.fixture
def secure(tmp_path):
    require_tool("mosquitto", find_mosquitto() is not None)
    b = SecureBroker(tmp_path)
    yield b
    b.proc.kill()


@pytest.fixture
def connect(secure):
    made = []

    def make(user, password=None, tls=False, client_id=None, timeout=10.0):
        c = MqttClient(secure.settings(user, password, tls), client_id or f"{user}-{len(made)}")
        made.append(c)
        return c.connect(timeout=timeout)

    yield make
    for c in made:
        c.close(timeout=0.5)


def collect(client: MqttClient, topic_filter: str) -> queue.Queue:
    q: queue.Queue = queue.Queue()
    client.subscribe(topic_filter, q.put)
    time.sleep(0.3)  # SUBACK
    return q


def nothing_arrives(q: queue.Queue, seconds: float = 1.0) -> bool:
    try:
        q.get(timeout=seconds)
        return False
    except queue.Empty:
        return True


def test_mosquitto_passwd_agrees_with_our_hash(tmp_path):
    require_tool("mosquitto_passwd")
    pf = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pf), "alice", "mật khẩu"], check=True)
    assert verify_password("mật khẩu", pf.read_text().split(":", 1)[1].strip())
    assert not verify_password("wrong", pf.read_text().split(":", 1)[1].strip())
    ours = hash_password("s3cret", salt=b"0123456789ab")
    assert ours.startswith("$7$101$") and verify_password("s3cret", ours)


def test_anonymous_refused(secure):
    c = MqttClient(secure.settings(None), "anon")
    try:
        with pytest.raises(errors.MqttError):
            c.connect(timeout=2)
        assert "refused" in (c.last_error or "") or not c.connected
    finally:
        c.close()


def test_wrong_password_refused(secure):
    c = MqttClient(secure.settings("loa-a", "not-the-password"), "loa-a")
    try:
        with pytest.raises(errors.MqttError) as exc:
            c.connect(timeout=2)
        assert "refused" in str(exc.value)
    finally:
        c.close()


def test_device_cannot_publish_as_another_device(connect):
    station = connect("station")
    reports = collect(station, T.devices_filter(Channel.STATUS))
    loa_a = connect("loa-a")
    with pytest.raises(errors.PublishRefused):  # MQTT 5: the broker says so in its PUBACK
        loa_a.publish_and_wait(T.device("loa-b", Channel.STATUS), b'{"state":"offline","at":1}')
    assert nothing_arrives(reports)
    loa_a.publish_and_wait(T.device("loa-a", Channel.STATUS), b'{"state":"online","at":1}')  # control
    assert reports.get(timeout=10).topic == T.device("loa-a", Channel.STATUS)


def test_device_cannot_publish_commands(connect):
    loa_b = connect("loa-b")
    got = collect(loa_b, T.device("loa-b", Channel.CMD))
    got_all = collect(loa_b, T.all_cmd())
    loa_a = connect("loa-a")
    for topic in (T.device("loa-b", Channel.CMD), T.all_cmd()):
        with pytest.raises(errors.PublishRefused):
            loa_a.publish_and_wait(topic, b"{}")
    assert nothing_arrives(got) and nothing_arrives(got_all, 0.3)
    connect("station").publish_and_wait(T.all_cmd(), b"from-station")  # control
    assert got_all.get(timeout=10).payload == b"from-station"


def test_device_cannot_read_another_devices_config_or_group(connect):
    station = connect("station")
    station.publish_and_wait(T.device("loa-b", Channel.CONFIG), b"secret-config-b", retain=True)
    station.publish_and_wait(T.device("loa-a", Channel.CONFIG), b"config-a", retain=True)
    station.publish_and_wait(T.group("to-2", Channel.SCHEDULE), b"schedule-2", retain=True)
    station.publish_and_wait(T.group("to-1", Channel.SCHEDULE), b"schedule-1", retain=True)
    loa_a = connect("loa-a")
    others = collect(loa_a, T.device("loa-b", Channel.CONFIG))
    other_group = collect(loa_a, T.group("to-2", Channel.SCHEDULE))
    own = collect(loa_a, T.device("loa-a", Channel.CONFIG))
    own_group = collect(loa_a, T.group("to-1", Channel.SCHEDULE))
    assert own.get(timeout=10).payload == b"config-a"
    assert own_group.get(timeout=10).payload == b"schedule-1"
    assert nothing_arrives(others) and nothing_arrives(other_group, 0.3)
    wildcard = collect(loa_a, f"thanthien/v1/{SITE}/#")
    payloads = set()
    while True:
        try:
            payloads.add(wildcard.get(timeout=1).payload)
        except queue.Empty:
            break
    assert b"secret-config-b" not in payloads and b"schedule-2" not in payloads


def test_kiosk_account_cannot_command_speakers(connect):
    loa_a = connect("loa-a")
    got = collect(loa_a, T.all_cmd())
    with pytest.raises(errors.PublishRefused):
        connect("kiosk-01").publish_and_wait(T.all_cmd(), b"{}")
    assert nothing_arrives(got)


def test_tls_listener_with_the_ward_ca(connect, secure):
    loa_a = connect("loa-a", tls=True)
    assert loa_a.connected
    loa_a.publish_and_wait(T.device("loa-a", Channel.TELEMETRY), b"{}", timeout=10)
    # plain MQTT to the TLS port does not get in
    plain = MqttClient(MqttSettings(port=secure.tls_port, username="loa-a", password=secure.passwords["loa-a"]),
                       "plain-on-tls")
    try:
        with pytest.raises(errors.MqttError):
            plain.connect(timeout=2)
    finally:
        plain.close()


def test_plain_listener_is_loopback_only(secure):
    conf = secure.proc.conf_path.read_text()
    assert f"listener {secure.proc.port} 127.0.0.1" in conf
    assert "allow_anonymous false" in conf


def test_revoked_device_is_cut_off(connect, secure):
    station = connect("station")
    reports = collect(station, T.devices_filter(Channel.EVENTS))
    loa_a = connect("loa-a", client_id="loa-a-live")
    cmds = collect(loa_a, T.device("loa-a", Channel.CMD))
    secure.revoke("loa-a")
    # the live session can neither send nor receive any more ...
    loa_a.publish(T.device("loa-a", Channel.EVENTS), b"{}")
    station.publish_and_wait(T.device("loa-a", Channel.CMD), b"{}")
    assert nothing_arrives(reports) and nothing_arrives(cmds, 0.3)
    # ... and it cannot connect again
    again = MqttClient(secure.settings("loa-a", secure.passwords["loa-a"]), "loa-a-new")
    try:
        with pytest.raises(errors.MqttError):
            again.connect(timeout=2)
    finally:
        again.close()


def test_acl_rendering_refuses_hostile_names():
    with pytest.raises(errors.InvalidIdentifier):
        Account("loa/#", AccountKind.DEVICE)
    with pytest.raises(errors.InvalidIdentifier):
        Account("loa-a", AccountKind.DEVICE, ["to-1\ntopic readwrite #"])
    with pytest.raises(errors.ValidationError):
        Account("tech", AccountKind.TECHNICIAN, ["to-1"])
    acl = render_acl(SITE, [Account("loa-a", AccountKind.DEVICE, ["to-1"])])
    assert "readwrite" not in acl and "#" not in acl.split("\n", 1)[1]


def test_password_file_round_trip_and_bad_lines(tmp_path):
    pf = PasswordFile(tmp_path / "pw")
    pf.set("loa-a", "p1")
    pf.save()
    assert (tmp_path / "pw").stat().st_mode & 0o777 == 0o640
    again = PasswordFile(tmp_path / "pw")
    assert again.check("loa-a", "p1") and not again.check("loa-a", "p2")
    (tmp_path / "bad").write_text("no-colon-here\n")
    with pytest.raises(errors.StorageError):
        PasswordFile(tmp_path / "bad")
    with pytest.raises(errors.ValidationError):
        pf.set("loa-b", "line\nbreak")

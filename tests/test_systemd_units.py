"""Every unit and drop-in in systemd/ passes `systemd-analyze verify` and carries the hardening."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent
SYSTEMD = ROOT / "systemd"
UNITS = sorted(SYSTEMD.glob("*.service"))
REQUIRED = ["Type=notify", "WatchdogSec=", "Restart=", "User=thanthien", "ProtectSystem=strict", "ProtectHome=yes",
            "NoNewPrivileges=yes", "PrivateTmp=yes", "ReadWritePaths=", "CapabilityBoundingSet="]
JOURNALD = Path("/lib/systemd/systemd-journald")


def verify(unit_path: Path) -> list[str]:
    """Run systemd-analyze verify; the problems it reports about our files (unknown users are fine here)."""
    out = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit_path)], capture_output=True, text=True,
                         timeout=60)
    text = out.stdout + out.stderr
    problems = [line for line in text.splitlines() if str(unit_path.parent) in line or unit_path.name in line]
    problems = [line for line in problems if "Unknown group" not in line and "Unknown user" not in line]
    assert out.returncode == 0 or not problems, text
    return problems


def local_copy(unit: Path, tmp_path: Path) -> Path:
    """The unit with its executables pointed at ones that exist on this machine.

    `verify` checks that ExecStart's program exists: the thanthien command is the one of
    this venv; cage (kiosk) is only on kiosks, so /bin/sh stands in when it is absent here.
    """
    exe = shutil.which("thanthien", path=str(Path(sys.executable).parent)) or sys.executable
    text = unit.read_text().replace("/opt/thanthien/venv/bin/thanthien", exe)
    if not Path("/usr/bin/cage").exists():
        text = text.replace("/usr/bin/cage", "/bin/sh")
    copy = tmp_path / unit.name
    copy.write_text(text)
    return copy


def test_units_exist():
    names = {u.name for u in UNITS}
    assert {"thanthien-speaker.service", "thanthien-station.service", "thanthien-kiosk.service"} <= names
    assert (SYSTEMD / "mosquitto.service.d" / "thanthien.conf").is_file()
    assert (SYSTEMD / "journald.conf.d" / "thanthien.conf").is_file()


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_verifies_and_is_hardened(unit, tmp_path):
    require_tool("systemd-analyze")
    text = unit.read_text()
    for key in REQUIRED:
        assert key in text, f"{unit.name} lacks {key}"
    problems = verify(local_copy(unit, tmp_path))
    assert not problems, problems


def test_verify_catches_a_bad_key(tmp_path):
    """The check above would notice a mistake (systemd only warns, so the output is what counts)."""
    require_tool("systemd-analyze")
    copy = local_copy(SYSTEMD / "thanthien-station.service", tmp_path)
    copy.write_text(copy.read_text().replace("[Service]\n", "[Service]\nWatchdogSecs=5\n"))
    assert any("WatchdogSecs" in line for line in verify(copy))


def test_speaker_unit_gets_audio_and_gpio_only():
    text = (SYSTEMD / "thanthien-speaker.service").read_text()
    assert "SupplementaryGroups=audio gpio" in text and "DevicePolicy=closed" in text
    assert "MemoryMax=" in text
    station = (SYSTEMD / "thanthien-station.service").read_text()
    assert "PrivateDevices=yes" in station and "gpio" not in station


def unit_values(path: Path) -> dict[str, list[str]]:
    """key → every value it is given (systemd keys may repeat)."""
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_kiosk_unit_is_a_full_screen_session_that_comes_back():
    kiosk = unit_values(SYSTEMD / "thanthien-kiosk.service")
    exec_start = kiosk["ExecStart"][0].split()
    assert exec_start[0] == "/usr/bin/cage" and "--" in exec_start
    assert exec_start[exec_start.index("--") + 1:] == ["/opt/thanthien/venv/bin/thanthien", "kiosk", "--config",
                                                       "/etc/thanthien/kiosk.toml"]
    assert kiosk["Restart"] == ["always"] and kiosk["StartLimitIntervalSec"] == ["0"]
    assert kiosk["User"] == ["thanthien-kiosk"]
    assert set(" ".join(kiosk["SupplementaryGroups"]).split()) >= {"video", "input", "render", "gpio"}
    # the kiosk process is cage's child: its READY/WATCHDOG notifications must be accepted
    assert kiosk["NotifyAccess"] == ["all"] and kiosk["Type"] == ["notify"]
    assert kiosk["PAMName"] == ["login"] and kiosk["TTYPath"] == ["/dev/tty1"]
    assert "getty@tty1.service" in kiosk["Conflicts"][0]
    assert {"char-drm rw", "char-input rw"} <= set(kiosk["DeviceAllow"])
    assert kiosk["ReadWritePaths"] == ["/var/lib/thanthien/kiosk"]
    assert "KIVY_HOME=/var/lib/thanthien/kiosk/kivy" in kiosk["Environment"]  # ProtectHome: no ~/.kivy


def test_mosquitto_drop_in_verifies_with_debian_unit(tmp_path):
    """The drop-in is loaded next to Debian's mosquitto.service and has no unknown key."""
    require_tool("systemd-analyze")
    debian = Path("/lib/systemd/system/mosquitto.service")
    require_tool("mosquitto.service", debian.exists())
    shutil.copy(debian, tmp_path / "mosquitto.service")
    (tmp_path / "mosquitto.service.d").mkdir()
    drop_in = SYSTEMD / "mosquitto.service.d" / "thanthien.conf"
    shutil.copy(drop_in, tmp_path / "mosquitto.service.d" / "thanthien.conf")
    assert not verify(tmp_path / "mosquitto.service")
    # and a typo in it would be seen: the drop-in really is read by verify
    (tmp_path / "mosquitto.service.d" / "thanthien.conf").write_text(drop_in.read_text() + "RestartSecs=1\n")
    assert any("RestartSecs" in line for line in verify(tmp_path / "mosquitto.service"))
    values = unit_values(drop_in)
    assert values["Restart"] == ["always"] and int(values["LimitNOFILE"][0]) >= 4096


def test_journald_drop_in_uses_known_keys_and_valid_values():
    path = SYSTEMD / "journald.conf.d" / "thanthien.conf"
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read(path)
    assert parser.sections() == ["Journal"]
    journal = dict(parser["Journal"])
    assert {"SystemMaxUse", "SystemKeepFree", "MaxRetentionSec", "Storage"} <= set(journal)
    for key in ("SystemMaxUse", "SystemKeepFree", "SystemMaxFileSize", "RuntimeMaxUse"):
        if key in journal:
            assert re.fullmatch(r"\d+[KMGT]?", journal[key]), (key, journal[key])
    assert journal["Storage"] in {"volatile", "persistent", "auto", "none"}
    require_tool("systemd-analyze")
    for key in ("MaxRetentionSec", "RateLimitIntervalSec", "SyncIntervalSec"):
        if key in journal:
            out = subprocess.run(["systemd-analyze", "timespan", journal[key]], capture_output=True, text=True)
            assert out.returncode == 0, (key, journal[key], out.stderr)
    # journald's own parser table lists every key it accepts as "Journal.<Key>"
    require_tool("systemd-journald", JOURNALD.exists())
    known = set(re.findall(rb"Journal\.([A-Za-z]+)", JOURNALD.read_bytes()))
    unknown = [k for k in journal if k.encode() not in known]
    assert not unknown, f"journald does not know {unknown}"

"""Every unit in systemd/ passes `systemd-analyze verify` and carries the hardening."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent
UNITS = sorted((ROOT / "systemd").glob("*.service"))
REQUIRED = ["Type=notify", "WatchdogSec=", "Restart=", "User=thanthien", "ProtectSystem=strict", "ProtectHome=yes",
            "NoNewPrivileges=yes", "PrivateTmp=yes", "ReadWritePaths=", "CapabilityBoundingSet="]


def test_units_exist():
    names = {u.name for u in UNITS}
    assert {"thanthien-speaker.service", "thanthien-station.service"} <= names


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_verifies_and_is_hardened(unit, tmp_path):
    require_tool("systemd-analyze")
    text = unit.read_text()
    for key in REQUIRED:
        assert key in text, f"{unit.name} lacks {key}"
    exe = shutil.which("thanthien", path=str(Path(sys.executable).parent)) or sys.executable
    copy = tmp_path / unit.name
    copy.write_text(text.replace("/opt/thanthien/venv/bin/thanthien", exe))
    out = subprocess.run(["systemd-analyze", "verify", "--man=no", str(copy)], capture_output=True, text=True,
                         timeout=60)
    problems = [line for line in (out.stdout + out.stderr).splitlines()
                if unit.name in line and "Unknown group" not in line and "Unknown user" not in line]
    assert out.returncode == 0 or not problems, out.stdout + out.stderr
    assert not problems, problems


def test_speaker_unit_gets_audio_and_gpio_only():
    text = (ROOT / "systemd" / "thanthien-speaker.service").read_text()
    assert "SupplementaryGroups=audio gpio" in text and "DevicePolicy=closed" in text
    assert "MemoryMax=" in text
    station = (ROOT / "systemd" / "thanthien-station.service").read_text()
    assert "PrivateDevices=yes" in station and "gpio" not in station

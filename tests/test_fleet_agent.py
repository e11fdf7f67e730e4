"""`thanthien fleet` commands answered by a real speaker agent over a real broker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from devices import protocol as p
from devices.config import toml_string
from tests.agent_support import SITE, wait_for
from tests.test_agent import DEVICE, agent_factory, media, station, wav_of  # noqa: F401 (fixtures)

pytestmark = pytest.mark.broker
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def fleet(tmp_path, broker, station):
    key = tmp_path / "station.key"
    station.key.save(key)
    cfg = tmp_path / "fleet.toml"
    cfg.write_text(f"site = {toml_string(SITE)}\nsigning_key = {toml_string(key)}\ntimeout_s = 10\n"
                   f"[mqtt]\nport = {broker.port}\n")

    def run(*args):
        return subprocess.run([sys.executable, "-m", "thanthien", "fleet", "--config", str(cfg), *args],
                              capture_output=True, text=True, cwd=ROOT, timeout=90)
    return run


def test_ping_volume_tone_identify_logs_and_ls(agent_factory, station, fleet):
    agent = agent_factory()
    station.wait_status(DEVICE, lambda s: s.state is p.NodeState.ONLINE)
    out = fleet("ping", DEVICE, "--count", "3")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("xong") == 3 and " ms)" in out.stdout
    out = fleet("volume", DEVICE, "40")
    assert out.returncode == 0, out.stderr
    assert agent.volume() == 40
    out = fleet("test-tone", DEVICE, "--seconds", "0.5", "--frequency", "800")
    assert out.returncode == 0, out.stderr
    out = fleet("identify", DEVICE, "--seconds", "1")
    assert out.returncode == 0, out.stderr
    pcm, rate, _ = wav_of(agent)
    assert len(pcm) >= int(1.4 * rate) * 2
    out = fleet("logs", DEVICE, "-n", "50")
    assert out.returncode == 0, out.stderr
    agent.publish_telemetry()
    listing = json.loads(fleet("ls", "--json").stdout)
    node = next(n for n in listing if n["device_id"] == DEVICE)
    assert node["online"] is True and node["volume"] == 40 and node["version"]


def test_refusals_reach_the_technician(agent_factory, station, fleet):
    agent_factory()
    station.wait_status(DEVICE, lambda s: s.state is p.NodeState.ONLINE)
    station.publish_config(DEVICE, 1, [], quiet_hours=[{"start": "00:00", "end": "23:59"}])
    import time

    time.sleep(1.0)
    if time.strftime("%H:%M") == "23:59":
        pytest.skip("outside the test's quiet window")
    out = fleet("test-tone", DEVICE)
    assert out.returncode == 1 and "quiet_hours" in out.stderr


def test_restart_makes_the_agent_exit_for_systemd(agent_factory, station, fleet):
    agent = agent_factory()
    station.wait_status(DEVICE, lambda s: s.state is p.NodeState.ONLINE)
    out = fleet("restart", DEVICE, "--reason", "cập nhật")
    assert out.returncode == 0 and "khởi động lại" in out.stdout, out.stderr
    assert wait_for(lambda: agent.exit_code == 75, 10)

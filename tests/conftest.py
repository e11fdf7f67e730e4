"""Fixtures that start real things: Mosquitto, an ALSA file device, Xvfb, mock GPIO pins.

Under `make test` (THANTHIEN_REQUIRE_ALL=1) a missing tool fails the test instead of
skipping it: the Makefile installs everything, so nothing may be skipped there.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from devices.broker import MosquittoProcess, find_mosquitto
from devices.mqtt import MqttSettings

REQUIRE_ALL = os.environ.get("THANTHIEN_REQUIRE_ALL") == "1"
ROOT = Path(__file__).resolve().parent.parent


def require_tool(name: str, found: bool | None = None) -> None:
    """Skip (or, under `make test`, fail) when an external tool is missing."""
    ok = found if found is not None else shutil.which(name) is not None
    if not ok:
        msg = f"{name} is not installed (run `make system-packages`)"
        if REQUIRE_ALL:
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture
def broker(tmp_path_factory):
    """A private Mosquitto from config/mosquitto/local.conf.in on a free port.

    Has .stop(), .kill(), .start(), .restart(down_for=...) for fault tests.
    """
    require_tool("mosquitto", find_mosquitto() is not None)
    b = MosquittoProcess(tmp_path_factory.mktemp("mosquitto"))
    b.start()
    yield b
    b.kill()


@pytest.fixture
def mqtt_settings(broker) -> MqttSettings:
    return MqttSettings(host=broker.host, port=broker.port, reconnect_min_s=0.05, reconnect_max_s=0.5)


@pytest.fixture
def alsa_file_device(tmp_path):
    """An ALSA `file` PCM as the default device: what is played lands in out.raw.

    Returns (env, raw_path): run the audio code in a subprocess with ``env`` (ALSA reads
    its config once per process, so the HOME switch must happen before it loads).
    """
    home = tmp_path / "alsa-home"
    home.mkdir()
    raw = home / "out.raw"
    (home / ".asoundrc").write_text(
        'pcm.!default {\n  type file\n  slave.pcm "null"\n'
        f'  file "{raw}"\n  format "raw"\n}}\n'
    )
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT)}
    return env, raw


@pytest.fixture(scope="session")
def xvfb():
    """One Xvfb for the session (1920x1080x24); yields the DISPLAY string."""
    require_tool("Xvfb")
    from devices.display import XvfbProcess

    with XvfbProcess(1920, 1080, 24) as x:
        old = os.environ.get("DISPLAY")
        os.environ["DISPLAY"] = x.display
        yield x.display
        if old is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = old


@pytest.fixture
def mock_pins():
    """gpiozero's MockFactory as the pin factory; returns the factory."""
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    old = Device.pin_factory
    factory = MockFactory()
    Device.pin_factory = factory
    yield factory
    factory.reset()
    Device.pin_factory = old


@pytest.fixture
def sqlite_path(tmp_path) -> Path:
    return tmp_path / "test.db"


@pytest.fixture
def python_exe() -> str:
    return sys.executable


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", "--disable-quic", "--disable-dev-shm-usage"]


@pytest.fixture(scope="session")
def chromium():
    """Headless Debian Chromium driven by Playwright (no browser is ever downloaded)."""
    require_tool("chromium", Path(CHROMIUM).exists())
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()

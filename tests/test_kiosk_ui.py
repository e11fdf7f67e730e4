"""The kiosk UI under Xvfb, driven by real touches at two panel sizes.

Every screen is photographed into docs/screenshots/ (kept in the repository, looked at
when the UI changes) and checked for text that overflows its box.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from devices.config import load_config
from kiosk.config import KioskConfig
from kiosk.core import Kiosk
from kiosk.pin import hash_pin
from tests.kiosk_support import ROOT, write_kiosk_config

SHOTS = ROOT / "docs" / "screenshots"


@pytest.mark.parametrize("size", ["800x480", "1920x1080"])
def test_citizen_and_admin_paths(tmp_path, xvfb, size):
    usb = tmp_path / "media"
    (usb / "USB-DISK").mkdir(parents=True)
    cfg = write_kiosk_config(tmp_path / "kiosk", pin_hash=hash_pin("2468"), buttons=True, usb_path=usb)
    with Kiosk(load_config(cfg, KioskConfig)) as kiosk:  # as if pulled from the station
        kiosk.db.execute("INSERT INTO announcements (id, title, text, level, created_ms) VALUES (1, ?, ?, 'normal', 0)",
                         ["Lịch tiêm phòng", "Sáng thứ Bảy tiêm phòng cho trẻ em tại trạm y tế phường."])
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "kiosk_ui_driver.py"), str(cfg), size, str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    results_file = out / "results.json"
    assert results_file.exists(), proc.stderr[-3000:]
    results = json.loads(results_file.read_text())
    assert results["error"] is None, results["error"]
    failed = {k: v["detail"] for k, v in results["checks"].items() if not v["ok"]}
    assert not failed, failed
    assert len(results["checks"]) >= 20
    overflow = {k: v for k, v in results["overflow"].items() if v}
    assert not overflow, overflow
    assert len(results["screens"]) >= 15
    SHOTS.mkdir(parents=True, exist_ok=True)
    for name in results["screens"]:
        shutil.copy(out / name, SHOTS / name)
    assert proc.returncode == 0


def test_kiosk_command_starts_saves_screens_and_stops_on_sigterm(tmp_path, xvfb):
    import signal
    import time

    cfg = write_kiosk_config(tmp_path / "kiosk")
    shots = tmp_path / "shots"
    proc = subprocess.Popen([sys.executable, "-m", "thanthien", "kiosk", "run", "--config", str(cfg), "--size",
                             "1024x600", "--screenshot-dir", str(shots)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (shots / "kiosk-home-1024x600.png").exists():
            assert proc.poll() is None, proc.stdout.read()[-2000:]
            time.sleep(0.2)
        assert (shots / "kiosk-home-1024x600.png").stat().st_size > 10_000
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    bad = subprocess.run([sys.executable, "-m", "thanthien", "kiosk", "run", "--config", str(cfg), "--size", "80x4"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--size" in bad.stderr

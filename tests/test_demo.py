"""`make demo` runs `thanthien demo`: it must start cleanly and stop cleanly on Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_starts_the_broker_and_stops_on_ctrl_c(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "thanthien", "demo", "--dir", str(tmp_path), "--no-kiosk",
                             "--speakers", "2"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C" in line:
                break
        assert any("MQTT broker" in l for l in lines), "".join(lines)
        assert (tmp_path / "broker" / "mosquitto.conf").exists()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, "".join(lines) + out
    assert "đã dừng" in out
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path / "broker")], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", "a demo process outlived the demo"

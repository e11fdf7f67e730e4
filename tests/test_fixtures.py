"""The test fixtures themselves start real things: prove each one works."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import require_tool


def test_broker_fixture_can_stop_and_restart(broker):
    assert broker.running
    port = broker.port
    broker.stop()
    assert not broker.running
    broker.start()
    assert broker.running and broker.port == port
    with socket.create_connection((broker.host, port), timeout=5):
        pass


def test_pyaudio_writes_pcm_to_the_alsa_file_device(alsa_file_device):
    env, raw = alsa_file_device
    code = textwrap.dedent("""
        import math, struct, pyaudio
        pa = pyaudio.PyAudio()
        s = pa.open(format=pyaudio.paInt16, channels=1, rate=16000, output=True)
        frames = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / 16000)))
                          for i in range(16000))
        s.write(frames)
        s.stop_stream(); s.close(); pa.terminate()
        print(len(frames))
    """)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    written = raw.read_bytes()
    # ALSA may convert the format, but the tone's energy must be there
    assert len(written) >= 16000
    assert any(written[i] != 0 for i in range(0, min(len(written), 20000), 7))


def test_xvfb_fixture_gives_a_display(xvfb):
    number = xvfb.lstrip(":")
    sock = Path(f"/tmp/.X11-unix/X{number}")
    assert sock.exists()
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(sock))


def test_mock_pins_drive_gpiozero(mock_pins):
    from gpiozero import Button, OutputDevice

    with OutputDevice(17) as relay, Button(5) as button:
        assert not relay.value
        relay.on()
        assert mock_pins.pin(17).state
        mock_pins.pin(5).drive_low()
        assert button.is_pressed


def test_required_tools_are_installed():
    """Under `make test` the Makefile has installed everything the suite uses."""
    from devices.broker import find_mosquitto

    require_tool("mosquitto", find_mosquitto() is not None)
    for tool in ("Xvfb", "espeak-ng", "sox"):
        require_tool(tool)


def test_chromium_fixture_renders_a_local_page(chromium, tmp_path):
    import http.server
    import threading

    (tmp_path / "index.html").write_text("<html><head><meta charset='utf-8'><title>Xin chào</title></head><body>Phường</body></html>",
                                         encoding="utf-8")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(tmp_path), **kw)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        page = chromium.new_page(viewport={"width": 390, "height": 844})
        page.goto(f"http://127.0.0.1:{srv.server_port}/index.html")
        assert page.title() == "Xin chào"
        assert page.screenshot()[:4] == b"\x89PNG"
        page.close()
    finally:
        srv.shutdown()

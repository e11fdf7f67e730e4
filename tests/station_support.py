"""Real station processes for tests, and gTTS answered locally with real MP3 speech."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from pathlib import Path

from devices.broker import free_port
from devices.config import toml_string

ROOT = Path(__file__).resolve().parent.parent
SITE = "phuong-test"
GTTS_URL = re.compile(r"https://translate\.google\.[a-z.]+/_/TranslateWebserverUi/data/batchexecute")


def espeak_mp3(text: str, out_dir: Path) -> bytes:
    """Real Vietnamese speech as MP3 (espeak-ng → lame), what gTTS would answer."""
    wav, mp3 = out_dir / "speech.wav", out_dir / "speech.mp3"
    subprocess.run(["espeak-ng", "-v", "vi", "-w", str(wav), text], check=True, capture_output=True)
    subprocess.run(["lame", "--quiet", "-b", "48", str(wav), str(mp3)], check=True)
    return mp3.read_bytes()


def gtts_body(mp3: bytes) -> str:
    """The batchexecute answer gTTS parses: a line with jQ1olc and the base64 audio."""
    b64 = base64.b64encode(mp3).decode()
    return ")]}'\n\n" + '[["wrb.fr","jQ1olc","[\\"' + b64 + '\\"]",null,null,null,"generic"]]\n'


def mock_gtts(rsps, mp3: bytes, status: int = 200) -> None:
    rsps.add(rsps.POST if hasattr(rsps, "POST") else "POST", GTTS_URL, body=gtts_body(mp3) if status == 200 else "",
             status=status)


def write_station_config(path: Path, data_dir: Path, mqtt_port: int, http_port: int | None = None,
                         extra: str = "") -> Path:
    http_port = http_port or free_port()
    path.write_text(
        f"site = {toml_string(SITE)}\nward_name = \"UBND phường Thử Nghiệm\"\ndata_dir = {toml_string(data_dir)}\n"
        f"{extra}\n[mqtt]\nport = {mqtt_port}\nreconnect_min_s = 0.05\nreconnect_max_s = 0.5\n"
        f"[http]\nhost = \"127.0.0.1\"\nport = {http_port}\npublic_url = \"http://127.0.0.1:{http_port}\"\n"
        f"[web]\nhost = \"127.0.0.1\"\nport = {free_port()}\n"  # the console, on a port of its own per test
        "[tts]\ntimeout_s = 5\n")
    return path


def start_station(cfg: Path, log: Path) -> subprocess.Popen:
    out = open(log, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "thanthien", "station", "--config", str(cfg)], cwd=ROOT,
                            stdout=out, stderr=subprocess.STDOUT)
    out.close()
    return proc


def stop_processes(procs: list[subprocess.Popen], timeout: float = 10.0) -> None:
    """SIGTERM every process first (they stop in parallel), then wait; kill what hangs."""
    import signal

    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

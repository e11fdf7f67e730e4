"""`make demo` runs `thanthien demo`: it must start cleanly and stop cleanly on Ctrl-C."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def start_demo(tmp_path: Path, *args: str, env: dict | None = None) -> tuple[subprocess.Popen, list[str]]:
    """`thanthien demo --dir tmp_path ARGS…`, read until it says it is up ("Ctrl-C" to stop)."""
    proc = subprocess.Popen([sys.executable, "-m", "thanthien", "demo", "--dir", str(tmp_path), *args], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C" in line:
                break
    except BaseException:
        proc.kill()
        raise
    return proc, lines


def test_demo_starts_the_broker_and_stops_on_ctrl_c(tmp_path):
    from thanthien.demo_roles import DEMO_PASSWORD, station_has_console

    proc, lines = start_demo(tmp_path, "--no-kiosk", "--speakers", "2")
    try:
        assert any("MQTT broker" in l for l in lines), "".join(lines)
        assert (tmp_path / "broker" / "mosquitto.conf").exists()
        if station_has_console():  # the console URL is printed once it answers, with the logins
            console = next(l for l in lines if "bảng điều khiển: " in l)
            url = console.split("bảng điều khiển: ", 1)[1].split()[0]
            assert "trả lời sau" in console, console  # how long it took is printed (target ≤ 60 s)
            assert any(DEMO_PASSWORD in l and "vanthu" in l for l in lines), "".join(lines)
            with urllib.request.urlopen(url, timeout=30) as page:
                assert page.status == 200
        assert any("emergency --bulletin" in l for l in lines), "".join(lines)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, "".join(lines) + out
    assert "đã dừng" in out
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path / "broker")], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", "a demo process outlived the demo"


def test_demo_seed_gives_a_few_days_of_reports(tmp_path):
    """Past plays, failures, a missed bulletin and an offline node: the reports have content."""
    from broadcast import bulletins, reports
    from broadcast.db import now_ms, open_db
    from thanthien.demo_roles import DEMO_PASSWORD, HISTORY_DAYS, USERS, seed, station_has_console, write_station_config

    (tmp_path / "station").mkdir()
    cfg = write_station_config(tmp_path, mqtt_port=1883, http_port=8080, web_port=8000)
    devices = ["loa-to-1-01", "loa-to-2-01", "loa-to-3-01", "loa-to-1-02", "loa-to-2-02", "loa-to-3-02"]
    seed(tmp_path, cfg, devices)
    seed(tmp_path, cfg, devices)  # a second start of the demo adds nothing
    db = open_db(tmp_path / "station" / "station.db")
    try:
        now = now_ms()
        start = now - (HISTORY_DAYS + 1) * 86_400_000
        past = [o for o in reports.outcomes(db, start, now)]
        per_day = 2 * len(devices)
        assert (HISTORY_DAYS - 1) * per_day <= len(past) <= (HISTORY_DAYS + 1) * per_day
        kinds = {o.outcome for o in past}
        assert reports.Outcome.PLAYED in kinds and {reports.Outcome.NOT_REPORTED, reports.Outcome.MISSED,
                                                     reports.Outcome.FAILED} & kinds
        played = sum(o.outcome is reports.Outcome.PLAYED for o in past)
        assert played >= 0.8 * len(past)
        summary = {s.device_id: s for s in reports.device_summary(db, start, now)}
        offline = summary["loa-to-3-02"]  # off for five hours yesterday
        assert offline.uptime_pct is not None and offline.uptime_pct < min(
            s.uptime_pct for d, s in summary.items() if d != "loa-to-3-02")
        assert db.execute("SELECT COUNT(*) FROM users").fetchone()[0] == len(USERS)
        emergency = [b for b in (bulletins.get(db, i) for i in (1, 2)) if b.level.value == "emergency"]
        assert emergency and emergency[0].state is bulletins.State.APPROVED
        if station_has_console():
            from broadcast.auth import authenticate

            assert authenticate(db, "phochutich", DEMO_PASSWORD) is not None
    finally:
        db.conn.close()


def test_demo_kiosk_runs_under_xvfb_without_a_display(tmp_path):
    """No display: the kiosk runs under Xvfb and the demo prints where its screenshots go."""
    from tests.conftest import require_tool
    from thanthien.demo import role_available

    require_tool("Xvfb")
    if not role_available("kiosk.ui"):
        pytest.skip("this install has no kiosk UI")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    proc, lines = start_demo(tmp_path, "--speakers", "1", env=env)
    try:
        kiosk = next((l for l in lines if "kiosk:" in l), "")
        assert "Xvfb" in kiosk, "".join(lines)
        shots = Path(kiosk.split("ảnh chụp từng màn hình tại ", 1)[1].strip())
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not list(shots.glob("*.png")):
            assert proc.poll() is None, "".join(lines)
            time.sleep(0.5)
        assert list(shots.glob("*.png")), (tmp_path / "logs" / "kiosk.log").read_text()[-2000:]
        # the kiosk talks to the demo station with the token the demo issued for it
        assert (tmp_path / "kiosk" / "station-token").stat().st_mode & 0o077 == 0
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "đã dừng" in out
    log = (tmp_path / "logs" / "kiosk.log").read_text()
    assert "fatal IO error" not in log, "Xvfb went away before the kiosk had stopped"


def test_demo_emergency_reaches_every_simulated_speaker(tmp_path):
    """The path the demo prints: the approved emergency bulletin, sent now, lands in every node's wav output."""
    from tests.agent_support import wait_for

    proc, lines = start_demo(tmp_path, "--no-kiosk", "--speakers", "3")
    try:
        command = next(l for l in lines if "emergency --bulletin" in l).split(": ", 1)[1].strip()
        argv = shlex.split(command)
        assert argv[:2] == ["thanthien", "station"], command
        outputs = sorted((tmp_path / "speakers").glob("*/out.wav"))
        # the nodes are online (their status is retained) before the emergency goes out
        assert wait_for(lambda: len(list((tmp_path / "speakers").glob("*/agent.db"))) == 3, timeout=60)
        time.sleep(3)
        before = {p.parent.name: p.stat().st_size if p.exists() else 0
                  for p in (tmp_path / "speakers" / d / "out.wav" for d in
                            ("loa-to-1-01", "loa-to-2-01", "loa-to-3-01"))}
        sent = subprocess.run([sys.executable, "-m", "thanthien", *argv[1:]], cwd=ROOT,  # exactly as printed
                              capture_output=True, text=True, timeout=120)
        assert sent.returncode == 0, sent.stdout + sent.stderr

        def grown() -> bool:
            sizes = {d: (tmp_path / "speakers" / d / "out.wav").stat().st_size
                     if (tmp_path / "speakers" / d / "out.wav").exists() else 0 for d in before}
            return all(sizes[d] > before[d] + 22050 for d in before)  # > 0.5 s of audio each

        assert wait_for(grown, timeout=90), (before, outputs, sent.stdout)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0

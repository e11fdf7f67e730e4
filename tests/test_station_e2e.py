"""End to end with real processes: Mosquitto, the station, three speaker agents in two
groups. A text bulletin is written, submitted (speech rendered), approved, scheduled
5 s ahead to one group; only that group's loudspeakers play it, on time, and the report
says so. A second run stops the broker over the scheduled minute."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import responses

from broadcast import areas, bulletins, reports, schedules
from broadcast.config import StationConfig
from broadcast.db import now_ms, open_db
from broadcast.media import MediaLibrary
from broadcast.tts import TextToSpeech
from devices import protocol as p
from devices.config import load_config
from tests.agent_support import read_wav, wait_for, write_agent_config
from tests.conftest import require_tool
from tests.station_support import espeak_mp3, mock_gtts, start_station, stop_processes, write_station_config

pytestmark = [pytest.mark.broker, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
NODES = {"loa-a1": "to-1", "loa-a2": "to-1", "loa-b1": "to-2"}


@pytest.fixture
def ward(tmp_path, broker):
    require_tool("espeak-ng")
    require_tool("lame")
    cfg_path = write_station_config(tmp_path / "station.toml", tmp_path / "station", broker.port)
    cfg = load_config(cfg_path, StationConfig)
    db = open_db(cfg.data_dir / "station.db")
    admin = areas.Actor("admin", areas.Role.ADMIN)
    areas.add_user(db, "admin", "admin", "Quản trị")
    areas.add_user(db, "vanthu", "operator", "Văn thư")
    areas.add_user(db, "phochutich", "approver", "Phó Chủ tịch")
    areas.save_group(db, admin, "to-1", "Tổ dân phố 1")
    areas.save_group(db, admin, "to-2", "Tổ dân phố 2")
    for dev, group in NODES.items():
        areas.save_device(db, admin, dev, f"Loa {dev}", [group], volume=80)
    key = p.SigningKey.load_or_create(cfg.signing_key_path)
    procs: list[subprocess.Popen] = []
    station = start_station(cfg_path, tmp_path / "station.log")
    procs.append(station)
    for dev in NODES:
        data = tmp_path / dev
        ncfg = write_agent_config(tmp_path / f"{dev}.toml", device_id=dev, data_dir=data, key=key,
                                  port=broker.port, sink=f"wav:{data / 'out.wav'}")
        log = open(tmp_path / f"{dev}.log", "ab")
        procs.append(subprocess.Popen([sys.executable, "-m", "thanthien", "speaker", "--config", str(ncfg)],
                                      cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
        log.close()
    # every node holds its config (groups) before the test goes on
    assert wait_for(lambda: db.execute("SELECT COUNT(*) FROM device_state WHERE online = 1").fetchone()[0] == 3, 60), \
        (tmp_path / "station.log").read_text()[-3000:]
    time.sleep(2.0)
    yield {"cfg": cfg, "db": db, "tmp": tmp_path, "broker": broker, "procs": procs}
    stop_processes(procs)


def make_bulletin(ward, text: str) -> int:
    db, cfg = ward["db"], ward["cfg"]
    lib = MediaLibrary(db, cfg.data_dir / "media")
    tts = TextToSpeech.from_settings(cfg.data_dir / "tts-cache", cfg.tts)
    operator = areas.actor_for(db, "vanthu")
    approver = areas.actor_for(db, "phochutich")
    bid = bulletins.create(db, operator, "Thông báo tiêm phòng", "normal", text=text)
    with responses.RequestsMock() as rsps:
        mock_gtts(rsps, espeak_mp3(text, ward["tmp"]))
        b = bulletins.submit(db, lib, tts, operator, bid)
    assert b.state is bulletins.State.SUBMITTED and not b.audio_fallback
    assert bulletins.approve(db, approver, bid).state is bulletins.State.APPROVED
    return bid


def schedule_to_group(ward, bid: int, group: str, seconds_ahead: float) -> int:
    db, cfg = ward["db"], ward["cfg"]
    operator = areas.actor_for(db, "vanthu")
    start = now_ms() + int(seconds_ahead * 1000)
    schedules.add_schedule(db, operator, cfg.timezone, cfg.schedule_horizon_h * 3_600_000, bulletin_id=bid, rule=None,
                           dtstart=start, targets=schedules.Targets(groups=(group,)))
    return start


def node_audio_seconds(ward, dev: str) -> float:
    path = ward["tmp"] / dev / "out.wav"
    if not path.exists():
        return 0.0
    pcm, rate, ch = read_wav(path)
    return len(pcm) / (rate * ch * 2)


def outcomes_by_device(ward, bid: int) -> dict[str, str]:
    return {o.device_id: o.outcome.value for o in reports.outcomes(ward["db"], 0, 2**62) if o.bulletin_id == bid}


def test_bulletin_plays_only_in_its_group_and_the_report_proves_it(ward):
    bid = make_bulletin(ward, "Kính mời bà con đưa trẻ đi tiêm phòng tại trạm y tế phường vào sáng thứ Bảy.")
    start = schedule_to_group(ward, bid, "to-1", 5)
    assert wait_for(lambda: outcomes_by_device(ward, bid) == {"loa-a1": "played", "loa-a2": "played"}, 90), \
        outcomes_by_device(ward, bid)
    for dev in ("loa-a1", "loa-a2"):
        assert node_audio_seconds(ward, dev) > 2.0
        started = ward["db"].execute("SELECT started_at FROM events WHERE device_id = ? AND type = 'play_started'",
                                     [dev]).fetchone()[0]
        assert abs(started - start) < 1000  # on time
    assert node_audio_seconds(ward, "loa-b1") == 0.0
    summary = {s.device_id: s for s in reports.device_summary(ward["db"], 0, 2**62)}
    assert summary["loa-a1"].played == 1 and summary["loa-b1"].planned == 0
    cov = reports.coverage(ward["db"], bid)
    assert cov["coverage_pct"] == 100.0 and cov["targeted_plays"] == 2
    csv = subprocess.run([sys.executable, "-m", "thanthien", "station", "--config", str(ward["tmp"] / "station.toml"),
                          "report", "outcomes"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert csv.returncode == 0 and csv.stdout.count(",played,") == 2, csv.stdout + csv.stderr


def test_same_report_when_the_broker_is_down_over_the_scheduled_minute(ward):
    bid = make_bulletin(ward, "Thông báo lịch cắt điện khu vực tổ dân phố hai.")
    start = schedule_to_group(ward, bid, "to-2", 8)
    # wait until loa-b1 holds the new schedule version, then take the broker away
    db = ward["db"]
    assert wait_for(lambda: db.execute("SELECT COUNT(*) FROM events WHERE device_id = 'loa-b1' AND "
                                       "type = 'schedule_applied' AND at > ?", [start - 8000]).fetchone()[0] >= 1, 30)
    time.sleep(1.0)  # media prefetch
    ward["broker"].stop()
    time.sleep(max(0, (start - now_ms()) / 1000) + 6)
    assert node_audio_seconds(ward, "loa-b1") > 1.0  # played with no broker
    ward["broker"].start()
    assert wait_for(lambda: outcomes_by_device(ward, bid) == {"loa-b1": "played"}, 90), outcomes_by_device(ward, bid)
    assert node_audio_seconds(ward, "loa-a1") == 0.0


def test_emergency_from_the_cli_reaches_every_node_at_once(ward, tmp_path):
    db = ward["db"]
    from broadcast.media import MediaLibrary

    lib = MediaLibrary(db, ward["cfg"].data_dir / "media")
    wav = tmp_path / "bao.wav"
    import wave

    from devices.audio import tone

    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(22050)
        w.writeframes(tone(1200, 1500, 22050, 1))
    media = lib.import_file(wav)
    operator = areas.actor_for(db, "vanthu")
    bid = bulletins.create(db, operator, "Bão số 5 đổ bộ", "emergency", media_sha256=media.sha256)
    cmd = [sys.executable, "-m", "thanthien", "station", "--config", str(ward["tmp"] / "station.toml"),
           "--as", "vanthu", "emergency", "--bulletin", str(bid), "--all", "--reason", "bão"]
    refused = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert refused.returncode == 2 and "chỉ người duyệt" in refused.stderr  # operators may not, by default
    cmd[cmd.index("vanthu")] = "phochutich"
    sent = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert sent.returncode == 0, sent.stderr
    assert wait_for(lambda: outcomes_by_device(ward, bid) == {d: "played" for d in NODES}, 60), \
        outcomes_by_device(ward, bid)
    log = areas.audit_log(db, "occurrence")
    assert log[-1]["action"] == "emergency.send" and log[-1]["actor"] == "phochutich"


def test_station_kill9_after_scheduling_loses_nothing(ward):
    bid = make_bulletin(ward, "Thông báo họp tổ dân phố.")
    station = ward["procs"][0]
    station.send_signal(signal.SIGKILL)
    station.wait(10)
    start = schedule_to_group(ward, bid, "to-1", 12)  # written while the station is down
    restarted = start_station(ward["tmp"] / "station.toml", ward["tmp"] / "station.log")
    ward["procs"][0] = restarted
    assert wait_for(lambda: outcomes_by_device(ward, bid) == {"loa-a1": "played", "loa-a2": "played"}, 90), \
        outcomes_by_device(ward, bid)

"""Every command of the agent, the amplifier's timings, and PyAudio through ALSA."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from devices import protocol as p
from devices.agent.player import ItemKind, Player, PlayItem
from devices.audio import NullSink, WavSink, rms, tone
from devices.gpio import AmpRelay
from tests.agent_support import RATE, NoAmp, dominant_frequency, read_wav, wait_for
from tests.conftest import require_tool
from tests.test_agent import DEVICE, agent_factory, media, station, wav_of  # noqa: F401 (fixtures)

pytestmark = pytest.mark.broker


def test_test_tone_and_identify(agent_factory, station):
    agent = agent_factory()
    cmd = station.send(DEVICE, "test_tone", {"duration_ms": 800, "frequency_hz": 1000})
    assert station.wait_ack(cmd).status is p.AckStatus.DONE
    pcm, rate, _ = wav_of(agent)
    assert abs(dominant_frequency(pcm, rate) - 1000) < 30
    cmd = station.send(DEVICE, "identify", {"duration_ms": 1500})
    assert station.wait_ack(cmd).status is p.AckStatus.DONE
    pcm2, _, _ = wav_of(agent)
    assert len(pcm2) - len(pcm) >= int(1.4 * RATE) * 2


def test_stop_ends_playback_and_reports_it(agent_factory, station, media):
    agent_factory()
    m = media.add_wav("long.wav", 8.0)
    cmd = station.send(DEVICE, "play", {"media": m.ref(), "broadcast_id": "b-stop"})
    station.wait_event(lambda d, e: e.type is p.EventType.PLAY_STARTED)
    stop = station.send(DEVICE, "stop", {"broadcast_id": "b-stop"})
    assert station.wait_ack(stop).result == {"stopped": 1}
    _d, ev = station.wait_event(lambda d, e: e.type is p.EventType.INTERRUPTED)
    assert ev.reason == "stopped" and ev.duration_ms < 6000
    assert station.wait_ack(cmd, ("failed",)).reason == "stopped"


def test_relay_plays_an_http_mp3_stream_until_the_time(agent_factory, station, media, tmp_path):
    require_tool("lame")
    agent = agent_factory()
    w = media.add_wav("stream.wav", 6.0, 880, rate=22050)
    subprocess.run(["lame", "--quiet", "-b", "64", str(w.path), str(media.dir / "vov.mp3")], check=True)
    until = p.now_ms() + 2500
    cmd = station.send(DEVICE, "relay", {"url": media.base + "/vov.mp3", "until": until},
                       priority=p.Priority.BACKGROUND)
    assert station.wait_ack(cmd, timeout=30).status is p.AckStatus.DONE
    assert p.now_ms() >= until - 200
    pcm, rate, _ = wav_of(agent)
    seconds = len(pcm) / (rate * 2)
    assert 1.5 <= seconds <= 3.5
    assert abs(dominant_frequency(pcm[rate:], rate) - 880) < 40


def test_logs_ping_sync_schedule_and_restart(agent_factory, station):
    import logging

    agent = agent_factory()
    logging.getLogger("thanthien.speaker").warning("marker line for the logs command")
    cmd = station.send(DEVICE, "logs", {"lines": 20})
    assert station.wait_ack(cmd).status is p.AckStatus.DONE
    _d, report = station.logs.get(timeout=20)
    assert report.cmd_id == cmd and any("marker line for the logs command" in line for line in report.lines)
    cmd = station.send(DEVICE, "sync_schedule", {})
    assert "schedule_versions" in station.wait_ack(cmd).result
    cmd = station.send(DEVICE, "restart", {"reason": "test"})
    assert station.wait_ack(cmd, ("accepted",)).status is p.AckStatus.ACCEPTED
    assert wait_for(lambda: agent._stop.is_set(), 10) and agent.exit_code == 75


def test_quiet_hours_refuse_normal_but_not_emergency(agent_factory, station, media):
    agent = agent_factory()
    station.publish_config(DEVICE, 1, [], quiet_hours=[{"start": "00:00", "end": "23:59"}], emergency_volume=90)
    assert wait_for(lambda: agent.node_config is not None, 20)
    if time.strftime("%H:%M") == "23:59":
        pytest.skip("the minute outside the test's quiet window")
    m = media.add_wav("q.wav", 0.3)
    normal = station.send(DEVICE, "play", {"media": m.ref()})
    assert station.wait_ack(normal, ("rejected",)).reason == "quiet_hours"
    urgent = station.send(DEVICE, "play", {"media": m.ref()}, priority=p.Priority.EMERGENCY)
    assert station.wait_ack(urgent).status is p.AckStatus.DONE
    _d, ev = station.wait_event(lambda d, e: e.type is p.EventType.PLAY_FINISHED)
    assert ev.volume == 90  # the emergency volume, not the normal one


def test_group_commands_reach_members_only(agent_factory, station, media):
    a = agent_factory("loa-a")
    b = agent_factory("loa-b")
    station.publish_config("loa-a", 1, ["to-1"])
    station.publish_config("loa-b", 1, ["to-2"])
    assert wait_for(lambda: "to-1" in a._subscribed_groups and "to-2" in b._subscribed_groups, 20)
    time.sleep(0.3)
    station.send("", "test_tone", {"duration_ms": 300}, topic=station.topics.group("to-1", p.Channel.CMD))
    station.wait_event(lambda d, e: d == "loa-a" and e.type is p.EventType.PLAY_FINISHED)
    time.sleep(0.5)
    assert not (b.data_dir / "out.wav").exists() or len(wav_of(b)[0]) == 0


# --- the player and the amplifier, without MQTT ------------------------------------------


def test_amp_warmup_tail_and_back_to_back(mock_pins):
    amp = AmpRelay(17, warmup_ms=300, tail_ms=400)
    sink = NullSink(RATE, 1)
    events = []
    player = Player(sink, amp, volume=lambda: 80, emergency_volume=lambda: 100,
                    on_event=lambda t, it, **k: events.append((t, it.key, time.monotonic())))
    pin = mock_pins.pin(17)
    try:
        assert not pin.state
        t0 = time.monotonic()
        for key in ("a", "b"):
            player.submit(PlayItem(key=key, kind=ItemKind.TONE, priority=p.Priority.NORMAL,
                                   pcm=tone(440, 300, RATE, 1)))
        assert wait_for(lambda: any(e[0] is p.EventType.PLAY_FINISHED and e[1] == "b" for e in events), 10)
        started_a = next(e[2] for e in events if e[0] is p.EventType.PLAY_STARTED and e[1] == "a")
        assert started_a - t0 >= 0.28  # warm-up before the first item only
        fin_a = next(e[2] for e in events if e[0] is p.EventType.PLAY_FINISHED and e[1] == "a")
        started_b = next(e[2] for e in events if e[0] is p.EventType.PLAY_STARTED and e[1] == "b")
        assert started_b - fin_a < 0.2  # back to back: no second warm-up, relay stayed on
        states = [(s.timestamp, s.state) for s in pin.states]
        assert [st for _t, st in states].count(True) == 1  # switched on once for both items
        assert pin.state  # still on during the tail
        assert wait_for(lambda: not pin.state, 3)
    finally:
        player.close()
        amp.close()
    assert not pin.state


def test_amp_off_after_close_even_mid_item(mock_pins):
    amp = AmpRelay(22, active_high=False, warmup_ms=0, tail_ms=5000)
    player = Player(NullSink(RATE, 1), amp, volume=lambda: 50, emergency_volume=lambda: 100)
    pin = mock_pins.pin(22)
    assert pin.state  # active-low: off means high
    player.submit(PlayItem(key="x", kind=ItemKind.TONE, priority=p.Priority.NORMAL, pcm=tone(440, 5000, RATE, 1)))
    assert wait_for(lambda: not pin.state, 5)
    player.close()
    amp.close()
    assert pin.state


@pytest.mark.parametrize("policy,expected_seconds", [(p.InterruptPolicy.RESUME, 3.0), (p.InterruptPolicy.RESTART, 4.0),
                                                     (p.InterruptPolicy.DROP, 2.0)])
def test_interrupt_policies(tmp_path, policy, expected_seconds):
    sink = WavSink(tmp_path / "out.wav", RATE, 1)
    events = []
    player = Player(sink, NoAmp(), volume=lambda: 100, emergency_volume=lambda: 100, fade_ms=0,
                    on_event=lambda t, it, **k: events.append((t, it.key)))
    try:
        player.submit(PlayItem(key="n", kind=ItemKind.TONE, priority=p.Priority.NORMAL, pcm=tone(440, 2000, RATE, 1),
                               interrupt_policy=policy))
        assert wait_for(lambda: (p.EventType.PLAY_STARTED, "n") in events, 5)
        time.sleep(1.0)
        player.submit(PlayItem(key="e", kind=ItemKind.TONE, priority=p.Priority.EMERGENCY,
                               pcm=tone(1500, 1000, RATE, 1)))
        assert wait_for(lambda: player.wait_idle(0.1) and (p.EventType.PLAY_FINISHED, "e") in events, 15)
        time.sleep(0.2)
    finally:
        player.close()
    pcm, rate, _ = read_wav(tmp_path / "out.wav")
    assert abs(len(pcm) / (rate * 2) - expected_seconds) < 0.25
    assert (p.EventType.INTERRUPTED, "n") in events
    assert ((p.EventType.PLAY_FINISHED, "n") in events) == (policy is not p.InterruptPolicy.DROP)


def test_equal_priorities_queue_in_order(tmp_path):
    sink = NullSink(RATE, 1, paced=False)
    order = []
    player = Player(sink, NoAmp(), volume=lambda: 100, emergency_volume=lambda: 100,
                    on_event=lambda t, it, **k: order.append(it.key) if t is p.EventType.PLAY_STARTED else None)
    try:
        for k in ("1", "2", "3"):
            player.submit(PlayItem(key=k, kind=ItemKind.TONE, priority=p.Priority.NORMAL, pcm=tone(440, 50, RATE, 1)))
        assert wait_for(lambda: len(order) == 3, 5)
    finally:
        player.close()
    assert order == ["1", "2", "3"]


def test_volume_scales_the_output(tmp_path):
    levels = {}
    for vol in (100, 50):
        sink = WavSink(tmp_path / f"v{vol}.wav", RATE, 1, paced=False)
        player = Player(sink, NoAmp(), volume=lambda v=vol: v, emergency_volume=lambda: 100)
        player.submit(PlayItem(key="t", kind=ItemKind.TONE, priority=p.Priority.NORMAL, pcm=tone(440, 300, RATE, 1)))
        assert wait_for(lambda: player.wait_idle(0.05), 5)
        time.sleep(0.1)
        player.close()
        levels[vol] = rms(read_wav(tmp_path / f"v{vol}.wav")[0])
    assert levels[50] < levels[100] * 0.5


def test_pyaudio_sink_through_the_alsa_file_device(alsa_file_device):
    env, raw = alsa_file_device
    code = textwrap.dedent("""
        from devices.audio import PyAudioSink, tone
        sink = PyAudioSink("default", 22050, 1, buffer_ms=200)
        sink.write(tone(440, 1000, 22050, 1))
        sink.close()
        try:
            PyAudioSink("no-such-card", 22050, 1).write(b"\\0\\0" * 100)
        except OSError as exc:
            print("ERR", exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "ERR no audio output named 'no-such-card'" in out.stdout
    data = raw.read_bytes()
    assert len(data) >= 22050 * 2 * 0.9
    assert abs(dominant_frequency(data[: len(data) // 2 * 2], 22050) - 440) < 30

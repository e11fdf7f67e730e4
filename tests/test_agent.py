"""The speaker-node agent in-process against a real Mosquitto, HTTP media and a wav sink."""

from __future__ import annotations

import json
import time

import pytest

from devices import protocol as p
from devices.agent.agent import Agent
from devices.config import SpeakerConfig, load_config
from tests.agent_support import (RATE, MediaServer, Station, dominant_frequency, read_wav, wait_for,
                                 write_agent_config)

pytestmark = pytest.mark.broker
DEVICE = "loa-01"


@pytest.fixture
def media(tmp_path):
    server = MediaServer(tmp_path / "www")
    yield server
    server.close()


@pytest.fixture
def station(mqtt_settings):
    s = Station(mqtt_settings)
    yield s
    s.close()


@pytest.fixture
def agent_factory(tmp_path, broker, station, mock_pins):
    made = []

    def make(device_id=DEVICE, amp_pin=None, extra=""):
        data = tmp_path / device_id
        cfg_path = write_agent_config(tmp_path / f"{device_id}.toml", device_id=device_id, data_dir=data,
                                      key=station.key, port=broker.port, sink=f"wav:{data / 'out.wav'}",
                                      amp_pin=amp_pin, extra=extra)
        agent = Agent(load_config(cfg_path, SpeakerConfig)).start()
        made.append(agent)
        assert agent.mqtt.wait_connected(20)
        time.sleep(0.3)  # subscriptions
        return agent

    yield make
    for a in made:
        a.close()


def wav_of(agent) -> tuple[bytes, int, int]:
    return read_wav(agent.data_dir / "out.wav")


def test_status_birth_telemetry_and_ping(agent_factory, station):
    agent = agent_factory()
    st = station.wait_status(DEVICE, lambda s: s.state is p.NodeState.ONLINE)
    assert st.version
    cmd = station.send(DEVICE, "ping", {"nonce": "n1"})
    ack = station.wait_ack(cmd)
    assert ack.status is p.AckStatus.DONE and ack.result["nonce"] == "n1"
    tel = agent.telemetry()
    for key in ("uptime_s", "version", "volume", "now_playing", "schedule_versions", "cache_bytes",
                "cache_limit_bytes", "cpu_temp_c", "clock_synced", "disk_free_bytes"):
        assert key in tel


def test_play_command_plays_verified_media_into_the_wav_sink(agent_factory, station, media):
    agent = agent_factory()
    m = media.add_wav("tin.wav", 1.0, 440)
    cmd = station.send(DEVICE, "play", {"media": m.ref(), "broadcast_id": "b1", "occurrence_id": "o1"})
    assert station.wait_ack(cmd, ("accepted",)).status is p.AckStatus.ACCEPTED
    assert station.wait_ack(cmd).status is p.AckStatus.DONE
    _dev, started = station.wait_event(lambda d, e: e.type is p.EventType.PLAY_STARTED)
    _dev, finished = station.wait_event(lambda d, e: e.type is p.EventType.PLAY_FINISHED)
    assert finished.occurrence_id == "o1" and finished.broadcast_id == "b1"
    assert 900 <= finished.duration_ms <= 1100
    pcm, rate, ch = wav_of(agent)
    assert rate == RATE and len(pcm) >= int(0.95 * RATE) * 2
    assert abs(dominant_frequency(pcm[: RATE * 2], rate) - 440) < 20


@pytest.mark.parametrize("case,expected", [("hash", "sha256 mismatch"), ("404", "HTTP 404"),
                                           ("truncated", "truncated"), ("garbage", "not decodable")])
def test_bad_media_never_plays(agent_factory, station, media, case, expected):
    agent = agent_factory()
    good = media.add_wav("a.wav", 0.5)
    ref = good.ref()
    if case == "hash":
        ref["sha256"] = "0" * 64
    elif case == "404":
        ref["url"] = media.base + "/missing.wav"
    elif case == "truncated":
        ref["bytes"] = good.size + 100
    else:
        bad = media.add_bytes("noise.mp3", b"ID3" + bytes(range(256)) * 40)
        ref = bad.ref()
    cmd = station.send(DEVICE, "play", {"media": ref, "occurrence_id": f"bad-{case}"})
    ack = station.wait_ack(cmd, ("failed",), timeout=60)
    assert expected in (ack.detail or "")
    _d, ev = station.wait_event(lambda d, e: e.type is p.EventType.PLAY_FAILED)
    assert expected in ev.reason
    assert not (agent.data_dir / "out.wav").exists() or len(wav_of(agent)[0]) == 0
    assert not list((agent.data_dir / "media").iterdir())  # nothing untrusted kept


def test_volume_persists_across_restart(agent_factory, station, tmp_path, broker):
    agent = agent_factory()
    cmd = station.send(DEVICE, "volume", {"volume": 35})
    assert station.wait_ack(cmd).status is p.AckStatus.DONE
    agent.close()
    again = agent_factory()
    assert again.volume() == 35


def test_rejections_are_acked_with_reasons(agent_factory, station):
    agent_factory()
    t = station.topics.device(DEVICE, p.Channel.CMD)
    cases = {
        b"not json": "bad_json",
        json.dumps({"v": 1}).encode(): "bad_envelope",
        p.encode_envelope(p.SigningKey.generate(), "ping", {}): "unknown_key",
        p.encode_envelope(station.key, "ping", {}, issued_at=p.now_ms() - 3_600_000): "expired",
        p.encode_envelope(station.key, "ping", {}, issued_at=p.now_ms() + 3_600_000): "issued_in_future",
        p.encode_envelope(station.key, "volume", {"volume": 1000}): "bad_body",
    }
    for payload in cases:
        station.client.publish_and_wait(t, payload)
    reasons = []
    deadline = time.monotonic() + 30
    while len(reasons) < len(cases) and time.monotonic() < deadline:
        try:
            _d, ack = station.acks.get(timeout=0.5)
        except Exception:
            continue
        if ack.status is p.AckStatus.REJECTED:
            reasons.append(ack.reason)
    assert sorted(reasons) == sorted(cases.values())
    replay = station.send(DEVICE, "ping", {})
    station.wait_ack(replay)
    station.client.publish_and_wait(t, p.encode_envelope(station.key, "ping", {}, msg_id=replay))
    assert station.wait_ack(replay, ("rejected",)).reason == "replayed"


def test_scheduled_occurrence_plays_on_time_from_the_group_schedule(agent_factory, station, media):
    agent = agent_factory()
    station.publish_config(DEVICE, 1, ["to-1"])
    assert wait_for(lambda: "to-1" in agent._subscribed_groups, 20)
    time.sleep(0.3)
    m = media.add_wav("bantin.wav", 0.6, 660)
    start = p.now_ms() + 3000
    station.publish_schedule("groups/to-1", 1, [{"occurrence_id": "occ-1", "broadcast_id": "b9", "start_at": start,
                                                 "media": m.ref()}])
    _d, ev = station.wait_event(lambda d, e: e.type is p.EventType.PLAY_STARTED and e.occurrence_id == "occ-1")
    assert ev.scheduled_at == start and abs(ev.started_at - start) < 500
    station.wait_event(lambda d, e: e.type is p.EventType.PLAY_FINISHED and e.occurrence_id == "occ-1")
    assert agent.store.get("schedule_versions") == {"groups/to-1": 1}
    pcm, rate, _ = wav_of(agent)
    assert abs(dominant_frequency(pcm, rate) - 660) < 30


def test_stale_schedule_version_refused(agent_factory, station, media):
    agent = agent_factory()
    m = media.add_wav("x.wav", 0.2)
    item = {"occurrence_id": "o-late", "start_at": p.now_ms() + 3_600_000, "media": m.ref()}
    station.publish_schedule(f"devices/{DEVICE}", 5, [item])
    assert wait_for(lambda: agent.store.get("schedule_versions", {}).get(f"devices/{DEVICE}") == 5)
    payload = p.encode_envelope(station.key, "schedule", {"version": 4, "target": f"devices/{DEVICE}",
                                                          "horizon_end": p.now_ms() + 1000, "items": []})
    station.client.publish_and_wait(station.topics.device(DEVICE, p.Channel.SCHEDULE), payload)
    assert station.wait_ack(json.loads(payload)["id"], ("rejected",)).reason == "stale_version"
    assert agent.store.get("schedule_versions")[f"devices/{DEVICE}"] == 5


def test_emergency_preempts_normal_and_the_wav_shows_the_switch(agent_factory, station, media):
    agent = agent_factory()
    normal = media.add_wav("normal.wav", 4.0, 440)
    urgent = media.add_wav("urgent.wav", 1.0, 1500)
    n_cmd = station.send(DEVICE, "play", {"media": normal.ref(), "occurrence_id": "n1"})
    station.wait_event(lambda d, e: e.type is p.EventType.PLAY_STARTED and e.occurrence_id == "n1")
    time.sleep(1.0)
    station.send(DEVICE, "play", {"media": urgent.ref(), "occurrence_id": "e1"}, priority=p.Priority.EMERGENCY,
                 topic=station.topics.all_cmd())
    station.wait_event(lambda d, e: e.type is p.EventType.INTERRUPTED and e.occurrence_id == "n1")
    station.wait_event(lambda d, e: e.type is p.EventType.PLAY_FINISHED and e.occurrence_id == "e1")
    _d, done = station.wait_event(lambda d, e: e.type is p.EventType.PLAY_FINISHED and e.occurrence_id == "n1")
    assert station.wait_ack(n_cmd).status is p.AckStatus.DONE
    pcm, rate, _ = wav_of(agent)
    sec, quarter = rate * 2, rate // 4 * 2  # bytes per second / per quarter second (whole samples)
    freqs = [round(dominant_frequency(pcm[i:i + quarter], rate)) for i in range(0, len(pcm) - quarter, quarter)]
    # 440 Hz, then 1500 Hz (the emergency), then 440 Hz again (the normal item resumed)
    first_e = next(i for i, f in enumerate(freqs) if abs(f - 1500) < 80)
    last_e = max(i for i, f in enumerate(freqs) if abs(f - 1500) < 80)
    assert all(abs(f - 440) < 40 for f in freqs[: first_e - 1]), freqs
    assert any(abs(f - 440) < 40 for f in freqs[last_e + 1:])
    total_s = len(pcm) / sec
    assert 4.8 <= total_s <= 5.6  # 4 s normal + 1 s emergency + short fade, nothing played twice


def test_amp_relay_follows_playback(agent_factory, station, media, mock_pins):
    agent = agent_factory(amp_pin=17)
    pin = mock_pins.pin(17)
    assert not pin.state
    m = media.add_wav("amp.wav", 1.0)
    cmd = station.send(DEVICE, "play", {"media": m.ref()})
    station.wait_event(lambda d, e: e.type is p.EventType.PLAY_STARTED)
    assert pin.state
    station.wait_ack(cmd)
    assert wait_for(lambda: not pin.state, 10)
    agent.close()
    assert not pin.state


def test_occurrence_plays_once_while_schedule_updates_keep_arriving(agent_factory, station, media):
    """Regression: every schedule update used to re-submit an occurrence still in the queue."""
    agent = agent_factory()
    m = media.add_wav("once.wav", 1.0, 500)
    start = p.now_ms() + 2500
    item = {"occurrence_id": "occ-once", "start_at": start, "media": m.ref()}
    for version in range(1, 12):
        station.publish_schedule(f"devices/{DEVICE}", version, [item])
        time.sleep(0.35)
    station.wait_event(lambda d, e: e.type is p.EventType.PLAY_FINISHED and e.occurrence_id == "occ-once")
    time.sleep(1.5)
    starts = [e for _d, e in station.all_events if e.type is p.EventType.PLAY_STARTED and e.occurrence_id == "occ-once"]
    assert len(starts) == 1
    pcm, rate, _ = wav_of(agent)
    assert abs(len(pcm) / (rate * 2) - 1.0) < 0.1

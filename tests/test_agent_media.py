"""The node's media cache and a failing audio device, without MQTT."""

from __future__ import annotations

import json
import time

import pytest

from devices import errors
from devices import protocol as p
from devices.agent.media import MediaCache
from devices.agent.player import ItemKind, Player, PlayItem
from devices.agent.store import AgentStore
from devices.audio import tone
from tests.agent_support import RATE, MediaServer, NoAmp, wait_for


@pytest.fixture
def server(tmp_path):
    s = MediaServer(tmp_path / "www")
    yield s
    s.close()


def test_lru_is_bounded_and_never_evicts_scheduled_media(tmp_path, server):
    store = AgentStore(tmp_path / "agent.db")
    files = [server.add_wav(f"m{i}.wav", 1.0, 300 + 100 * i) for i in range(4)]  # ~44 kB each
    cache = MediaCache(tmp_path / "media", store, max_bytes=int(files[0].size * 2.5), max_media_bytes=10**6)
    refs = [p.MediaRef(**f.ref()) for f in files]
    # m0 is needed by a pending occurrence: it must survive every eviction
    item = {"occurrence_id": "o1", "start_at": p.now_ms() + 3_600_000, "media": files[0].ref()}
    store.replace_schedule("devices/x", 1, [("o1", item["start_at"], 1, json.dumps(item))])
    for ref in refs[:3]:
        cache.ensure(ref)
        time.sleep(0.01)
    assert cache.has(refs[0]) and not cache.has(refs[1]) and cache.has(refs[2])  # m1 was least recently used
    assert cache.used_bytes() <= cache.max_bytes
    cache.ensure(refs[3])
    assert cache.has(refs[0]) and cache.has(refs[3]) and not cache.has(refs[2])
    # nothing can be stored when scheduled media fills the cache
    small = MediaCache(tmp_path / "media", store, max_bytes=files[0].size + 10, max_media_bytes=10**6)
    with pytest.raises(errors.MediaError) as exc:
        small.ensure(refs[1])
    assert "cache full" in str(exc.value)
    store.close()


def test_oversized_media_refused_before_download(tmp_path, server):
    store = AgentStore(tmp_path / "agent.db")
    f = server.add_wav("big.wav", 1.0)
    cache = MediaCache(tmp_path / "media", store, max_bytes=10**7, max_media_bytes=1000)
    with pytest.raises(errors.MediaError) as exc:
        cache.ensure(p.MediaRef(**f.ref()))
    assert "over this node's limit" in str(exc.value)
    assert server.hits == {}
    store.close()


class BrokenSink:
    """An audio device that is missing (then busy): every write fails."""

    sample_rate, channels = RATE, 1

    def __init__(self):
        self.writes = 0

    def write(self, pcm):
        self.writes += 1
        raise errors.AudioError("cannot open audio output hw:1: Device or resource busy")

    def pause(self):
        pass

    def close(self):
        pass


def test_missing_audio_device_reports_errors_retries_and_survives():
    events = []
    sink = BrokenSink()
    player = Player(sink, NoAmp(), volume=lambda: 70, emergency_volume=lambda: 100, device_retries=3,
                    on_event=lambda t, it, **k: events.append((t, it.key, k.get("reason"))))
    try:
        player.submit(PlayItem(key="a", kind=ItemKind.TONE, priority=p.Priority.NORMAL, pcm=tone(440, 300, RATE, 1)))
        assert wait_for(lambda: any(e[0] is p.EventType.PLAY_FAILED for e in events), 15)
        errs = [e for e in events if e[0] is p.EventType.ERROR]
        assert len(errs) == 3 and "busy" in errs[0][2]
        assert sink.writes == 3
        failed = next(e for e in events if e[0] is p.EventType.PLAY_FAILED)
        assert "audio output" in failed[2]
        # the player is still alive for the next item
        player.submit(PlayItem(key="b", kind=ItemKind.TONE, priority=p.Priority.NORMAL, pcm=tone(440, 100, RATE, 1)))
        assert wait_for(lambda: any(e[0] is p.EventType.PLAY_FAILED and e[1] == "b" for e in events), 15)
        assert player._thread.is_alive()
    finally:
        player.close()

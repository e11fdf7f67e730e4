"""Station core without a browser: workflow, roles, audit, TTS, media, schedules, ingest."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import textwrap
import time
import uuid
import wave
from pathlib import Path

import pytest
import responses

from broadcast import areas, bulletins, reports, schedules
from broadcast.db import now_ms, open_db
from broadcast.media import MediaLibrary, MediaServer
from broadcast.service import ingest_report
from broadcast.tts import TextToSpeech, split_sentences
from devices import errors
from devices import protocol as p
from devices.audio import tone
from tests.conftest import require_tool
from tests.station_support import espeak_mp3, mock_gtts

ROOT = Path(__file__).resolve().parent.parent
TZ = "Asia/Ho_Chi_Minh"
ADMIN = areas.Actor("admin", areas.Role.ADMIN)
OPERATOR = areas.Actor("vanthu", areas.Role.OPERATOR)
APPROVER = areas.Actor("phochutich", areas.Role.APPROVER)
VIEWER = areas.Actor("xem", areas.Role.VIEWER)


@pytest.fixture
def db():
    d = open_db(":memory:")
    areas.save_group(d, ADMIN, "to-1", "Tổ dân phố 1", quiet_start="22:00", quiet_end="05:00")
    areas.save_group(d, ADMIN, "to-2", "Tổ dân phố 2")
    areas.save_device(d, ADMIN, "loa-1", "Loa 1", ["to-1"])
    areas.save_device(d, ADMIN, "loa-2", "Loa 2", ["to-2"])
    return d


@pytest.fixture
def lib(db, tmp_path):
    return MediaLibrary(db, tmp_path / "media", max_bytes=5 * 1024 * 1024)


@pytest.fixture
def tts(tmp_path):
    return TextToSpeech(tmp_path / "tts", timeout_s=2)


def wav_file(path: Path, seconds: float = 1.0, rate: int = 22050) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(tone(440, int(seconds * 1000), rate, 1))
    return path


# --- bulletins and roles ---------------------------------------------------------------


def test_workflow_with_roles_and_audit(db, lib, tts, tmp_path):
    media = lib.import_file(wav_file(tmp_path / "a.wav"))
    bid = bulletins.create(db, OPERATOR, "Thông báo", "priority", media_sha256=media.sha256)
    with pytest.raises(bulletins.WorkflowError):
        bulletins.approve(db, APPROVER, bid)  # not submitted yet
    b = bulletins.submit(db, lib, tts, OPERATOR, bid)
    assert b.state is bulletins.State.SUBMITTED and b.audio_sha256 == media.sha256
    with pytest.raises(bulletins.WorkflowError) as exc:
        bulletins.approve(db, OPERATOR, bid)
    assert "chỉ người duyệt" in str(exc.value)
    assert bulletins.approve(db, APPROVER, bid, "đồng ý").state is bulletins.State.APPROVED
    # editing an approved bulletin returns it to draft
    bulletins.edit(db, OPERATOR, bid, title="Thông báo (sửa)")
    assert bulletins.get(db, bid).state is bulletins.State.DRAFT
    log = areas.audit_log(db, "bulletin", bid)
    assert [e["action"] for e in log] == ["bulletin.create", "bulletin.submit", "bulletin.approve", "bulletin.edit"]
    assert log[2]["actor"] == "phochutich" and log[3]["detail"]["to"] == "draft"
    with pytest.raises(Exception):
        db.execute("UPDATE audit SET actor = 'someone-else'")


@pytest.mark.parametrize("kwargs,expected", [
    (dict(title="", level="normal", text="x"), "tiêu đề: bắt buộc"),
    (dict(title="t", level="urgent", text="x"), "mức độ"),
    (dict(title="t", level="normal"), "nội dung"),
    (dict(title="t" * 201, level="normal", text="x"), "tối đa 200"),
    (dict(title="t", level="normal", text="x" * 20_001), "tối đa 20000"),
    (dict(title="t", level="normal", media_sha256="0" * 64), "không có trong thư viện"),
])
def test_bad_bulletins_name_the_field(db, kwargs, expected):
    title, level = kwargs.pop("title"), kwargs.pop("level")
    with pytest.raises(errors.ValidationError) as exc:
        bulletins.create(db, OPERATOR, title, level, **kwargs)
    assert expected in str(exc.value)


def test_viewer_cannot_write_and_reject_needs_reason(db, lib, tts, tmp_path):
    with pytest.raises(bulletins.WorkflowError):
        bulletins.create(db, VIEWER, "t", "normal", text="x")
    media = lib.import_file(wav_file(tmp_path / "a.wav"))
    bid = bulletins.create(db, OPERATOR, "t", "normal", media_sha256=media.sha256)
    bulletins.submit(db, lib, tts, OPERATOR, bid)
    with pytest.raises(errors.ValidationError):
        bulletins.reject(db, APPROVER, bid, "  ")
    assert bulletins.reject(db, APPROVER, bid, "sai chính tả").state is bulletins.State.REJECTED


def test_emergency_now_needs_role_and_reason(db, lib, tts, tmp_path):
    media = lib.import_file(wav_file(tmp_path / "a.wav"))
    bid = bulletins.create(db, OPERATOR, "Bão số 5", "emergency", media_sha256=media.sha256)
    with pytest.raises(bulletins.WorkflowError):
        bulletins.approve_emergency_now(db, lib, tts, OPERATOR, bid, "bão", allow_operator=False)
    with pytest.raises(errors.ValidationError):
        bulletins.approve_emergency_now(db, lib, tts, APPROVER, bid, "", allow_operator=False)
    b = bulletins.approve_emergency_now(db, lib, tts, OPERATOR, bid, "bão đổ bộ", allow_operator=True)
    assert b.state is bulletins.State.APPROVED
    assert areas.audit_log(db, "bulletin", bid)[-1]["action"] == "bulletin.emergency_approve"


# --- TTS -------------------------------------------------------------------------------


def test_split_sentences_keeps_them_whole():
    parts = split_sentences("Xin chào bà con. Hôm nay trời nắng! Có mưa không? " + "rất dài, " * 40)
    assert parts[:3] == ["Xin chào bà con.", "Hôm nay trời nắng!", "Có mưa không?"]
    assert all(len(x) <= 180 for x in parts)


def test_gtts_is_cached_and_never_fetched_twice(tts, tmp_path):
    require_tool("espeak-ng")
    require_tool("lame")
    mp3 = espeak_mp3("Xin chào", tmp_path)
    text = "Xin chào bà con. Đây là bản tin thử."
    with responses.RequestsMock() as rsps:
        mock_gtts(rsps, mp3)
        mock_gtts(rsps, mp3)
        first = tts.speak(text)
        assert len(rsps.calls) == 2  # two sentences, two requests
    assert first.engine == "gtts" and not first.fallback and first.duration_ms > 500
    with responses.RequestsMock() as rsps:  # any request now would fail the test
        again = tts.speak(text)
        assert len(rsps.calls) == 0
    assert again.path == first.path


@pytest.mark.parametrize("status", [429, 500])
def test_gtts_failure_falls_back_to_espeak_and_says_so(tts, status, db, lib):
    require_tool("espeak-ng")
    with responses.RequestsMock() as rsps:
        mock_gtts(rsps, b"", status=status)
        speech = tts.speak("Thông báo mất điện.")
    assert speech.fallback and speech.engine == "espeak-ng" and speech.duration_ms > 300
    bid = bulletins.create(db, OPERATOR, "Mất điện", "normal", text="Thông báo mất điện.")
    with responses.RequestsMock() as rsps:
        mock_gtts(rsps, b"", status=status)
        b = bulletins.submit(db, lib, tts, OPERATOR, bid)
    assert b.audio_fallback and lib.get(b.audio_sha256).source == "tts-fallback"


def test_tts_refuses_empty_and_oversized_text(tts):
    with pytest.raises(errors.ValidationError):
        tts.speak("   ")
    with pytest.raises(errors.ValidationError):
        tts.speak("a" * 20_001)


# --- media -----------------------------------------------------------------------------


@pytest.mark.parametrize("content,expected", [
    (b"", "rỗng"), (b"hello, not audio at all" * 10, "không phải âm thanh"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 200, "không giải mã được"),
    (b"ID3" + bytes(range(256)) * 20, "không giải mã được"),
])
def test_bad_uploads_refused(lib, tmp_path, content, expected):
    path = tmp_path / "upload.mp3"
    path.write_bytes(content)
    with pytest.raises(errors.ValidationError) as exc:
        lib.import_file(path)
    assert expected in str(exc.value)
    assert not list(lib.dir.glob(".import-*"))  # nothing half-written left behind


def test_oversized_upload_refused_before_filling_the_disk(lib):
    class Endless:
        sent = 0

        def read(self, n):
            self.sent += n
            return b"\xff" * n

    stream = Endless()
    with pytest.raises(errors.ValidationError) as exc:
        lib.import_stream(stream, filename="big.mp3")
    assert "vượt giới hạn" in str(exc.value)
    assert stream.sent <= lib.max_bytes + 2 * 1024 * 1024


def test_media_is_content_addressed_and_served_with_range_and_etag(lib, tmp_path):
    a = lib.import_file(wav_file(tmp_path / "../../etc-passwd.wav"), filename="../../etc/passwd.wav")
    assert a.filename == "passwd.wav" and (lib.dir / a.sha256).exists()
    assert lib.import_file(wav_file(tmp_path / "copy.wav")).sha256 == a.sha256  # stored once
    srv = MediaServer(lib.dir, "127.0.0.1", 0).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        conn.request("GET", f"/media/{a.sha256}")
        r = conn.getresponse()
        body = r.read()
        assert r.status == 200 and int(r.getheader("Content-Length")) == a.bytes == len(body)
        etag = r.getheader("ETag")
        conn.request("GET", f"/media/{a.sha256}", headers={"Range": "bytes=10-19"})
        r = conn.getresponse()
        assert r.status == 206 and r.read() == body[10:20] and r.getheader("Content-Range") == f"bytes 10-19/{a.bytes}"
        conn.request("GET", f"/media/{a.sha256}", headers={"If-None-Match": etag})
        r = conn.getresponse()
        r.read()
        assert r.status == 304
        for path in ("/media/../station.db", "/media/" + "g" * 64, "/etc/passwd", f"/media/{a.sha256}/x"):
            conn.request("GET", path)
            r = conn.getresponse()
            r.read()
            assert r.status == 404, path
        conn.request("GET", f"/media/{a.sha256}", headers={"Range": "bytes=999999999-"})
        r = conn.getresponse()
        r.read()
        assert r.status == 416
    finally:
        srv.close()


# --- schedules ------------------------------------------------------------------------


def approved(db, lib, tts, tmp_path, level="normal") -> int:
    media = lib.import_file(wav_file(tmp_path / f"{level}.wav"))
    bid = bulletins.create(db, OPERATOR, f"Bản tin {level}", level, media_sha256=media.sha256)
    bulletins.submit(db, lib, tts, OPERATOR, bid)
    bulletins.approve(db, APPROVER, bid)
    return bid


def noon_tomorrow(minutes: int = 0) -> int:
    """A daytime moment in the ward, so quiet hours never decide a test by the clock."""
    import datetime as dt
    from zoneinfo import ZoneInfo

    d = dt.datetime.now(ZoneInfo(TZ)).replace(hour=12, minute=0, second=0, microsecond=0) + dt.timedelta(days=1)
    return int(d.timestamp() * 1000) + minutes * 60_000


def local_ms(text: str) -> int:
    import datetime as dt
    from zoneinfo import ZoneInfo

    return int(dt.datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=ZoneInfo(TZ)).timestamp() * 1000)


def test_rrule_expansion_in_the_ward_time_zone():
    start = local_ms("2030-01-06 06:30")  # a Sunday
    rule = schedules.build_rrule("weekly", weekdays=["mo", "we"])
    got = schedules.expand(rule, start, TZ, start, start + 9 * 86_400_000)
    import datetime as dt
    from zoneinfo import ZoneInfo

    local = [dt.datetime.fromtimestamp(ms / 1000, ZoneInfo(TZ)).strftime("%a %H:%M") for ms in got]
    assert local == ["Mon 06:30", "Wed 06:30", "Mon 06:30"]
    assert len(schedules.expand(schedules.build_rrule("daily", count=3), start, TZ, start, start + 30 * 86_400_000)) == 3
    with pytest.raises(errors.ValidationError):
        schedules.expand("FREQ=SOMETIMES", start, TZ, start, start + 1000)
    with pytest.raises(errors.ValidationError):
        schedules.build_rrule("weekly", weekdays=["funday"])


def test_quiet_hours_refuse_normal_but_not_emergency(db, lib, tts, tmp_path):
    night = now_ms() + 86_400_000
    import datetime as dt
    from zoneinfo import ZoneInfo

    d = dt.datetime.fromtimestamp(night / 1000, ZoneInfo(TZ)).replace(hour=23, minute=0, second=0, microsecond=0)
    at = int(d.timestamp() * 1000)
    normal = approved(db, lib, tts, tmp_path, "normal")
    with pytest.raises(errors.ValidationError) as exc:
        schedules.add_schedule(db, OPERATOR, TZ, 3 * 86_400_000, bulletin_id=normal, rule=None, dtstart=at,
                               targets=schedules.Targets(groups=("to-1",)))
    assert "giờ yên tĩnh" in str(exc.value) and "Tổ dân phố 1" in str(exc.value)
    # the other group has no quiet hours
    schedules.add_schedule(db, OPERATOR, TZ, 3 * 86_400_000, bulletin_id=normal, rule=None, dtstart=at,
                           targets=schedules.Targets(groups=("to-2",)))
    urgent = approved(db, lib, tts, tmp_path, "emergency")
    schedules.add_schedule(db, OPERATOR, TZ, 3 * 86_400_000, bulletin_id=urgent, rule=None, dtstart=at,
                           targets=schedules.Targets(groups=("to-1",)))


def test_overlap_preview_says_who_waits_and_who_preempts(db, lib, tts, tmp_path):
    at = noon_tomorrow()
    normal = approved(db, lib, tts, tmp_path, "normal")
    schedules.add_schedule(db, OPERATOR, TZ, 3 * 86_400_000, bulletin_id=normal, rule=None, dtstart=at,
                           targets=schedules.Targets(all=True))
    urgent = approved(db, lib, tts, tmp_path, "priority")
    pv = schedules.preview(db, TZ, 3 * 86_400_000, bulletin=bulletins.get(db, urgent), rule=None, dtstart=at,
                           targets=schedules.Targets(groups=("to-1",)), priority=2, duration_ms=30_000)
    assert pv.starts == [at] and any("sẽ ngắt" in o for o in pv.overlaps)


def test_schedule_bad_input(db, lib, tts, tmp_path):
    bid = approved(db, lib, tts, tmp_path)
    horizon = 86_400_000
    cases = [
        (dict(bulletin_id=bid, rule=None, dtstart=noon_tomorrow(), targets=schedules.Targets()), "nơi phát"),
        (dict(bulletin_id=bid, rule=None, dtstart=noon_tomorrow(), targets=schedules.Targets(groups=("to-9",))), "to-9"),
        (dict(bulletin_id=bid, rule=None, dtstart=now_ms() - 3_600_000, targets=schedules.Targets(all=True)), "đã qua"),
        (dict(bulletin_id=bid, rule=None, dtstart=noon_tomorrow(), targets=schedules.Targets(all=True), repeat=50),
         "phát lại"),
        (dict(bulletin_id=None, rule=None, dtstart=now_ms() + 1000, targets=schedules.Targets(all=True),
              relay_url="ftp://x", relay_minutes=10), "http"),
    ]
    for kwargs, expected in cases:
        with pytest.raises(errors.ValidationError) as exc:
            schedules.add_schedule(db, OPERATOR, TZ, horizon, **kwargs)
        assert expected in str(exc.value)
    with pytest.raises(errors.ValidationError):
        schedules.add_schedule(db, VIEWER, TZ, horizon, bulletin_id=bid, rule=None, dtstart=now_ms() + 1000,
                               targets=schedules.Targets(all=True))


# --- ingest and reports ------------------------------------------------------------------


def test_events_are_ingested_once_and_matched_to_occurrences(db, lib, tts, tmp_path):
    bid = approved(db, lib, tts, tmp_path)
    at = noon_tomorrow()
    schedules.add_schedule(db, OPERATOR, TZ, 3 * 86_400_000, bulletin_id=bid, rule=None, dtstart=at,
                           targets=schedules.Targets(all=True))
    oid = db.execute("SELECT id FROM occurrences").fetchone()[0]
    topics = p.Topics("phuong-test")
    finished = p.EventReport(id=str(uuid.uuid4()), type=p.EventType.PLAY_FINISHED, at=at + 1000, occurrence_id=oid,
                             started_at=at, ended_at=at + 1000, duration_ms=1000)
    failed = p.EventReport(id=str(uuid.uuid4()), type=p.EventType.PLAY_FAILED, at=at, occurrence_id=oid,
                           reason="sha256 mismatch")
    for _ in range(3):  # QoS 1 redelivery
        ingest_report(db, topics, topics.device("loa-1", p.Channel.EVENTS), p.encode_report(finished), lambda d: {})
    ingest_report(db, topics, topics.device("loa-2", p.Channel.EVENTS), p.encode_report(failed), lambda d: {})
    assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 2
    out = {o.device_id: o for o in reports.outcomes(db, 0, 2**62)}
    assert out["loa-1"].outcome is reports.Outcome.PLAYED and out["loa-1"].seconds == 1.0
    assert out["loa-2"].outcome is reports.Outcome.FAILED and out["loa-2"].reason == "sha256 mismatch"
    assert reports.coverage(db, bid)["coverage_pct"] == 50.0
    for bad in (b"garbage", b"{}", json.dumps({"id": "x", "type": "play_finished", "at": 1}).encode()):
        with pytest.raises(errors.ProtocolError):
            ingest_report(db, topics, topics.device("loa-1", p.Channel.EVENTS), bad, lambda d: {})


def test_status_history_gives_uptime(db):
    topics = p.Topics("phuong-test")
    t0 = now_ms() - 100_000
    for at, state in ((t0, "online"), (t0 + 50_000, "offline"), (t0 + 75_000, "online")):
        ingest_report(db, topics, topics.device("loa-1", p.Channel.STATUS),
                      json.dumps({"state": state, "at": at}).encode(), lambda d: {})
    up = reports.uptime_pct(db, "loa-1", t0, now_ms())
    assert 70 <= up <= 80
    assert reports.offline_now(db)[0]["device_id"] == "loa-2"


def test_stale_node_gets_the_document_again(db):
    topics = p.Topics("phuong-test")
    stale = ingest_report(db, topics, topics.device("loa-1", p.Channel.STATUS),
                          json.dumps({"state": "online", "at": now_ms(),
                                      "schedule_versions": {"groups/to-1": 2}}).encode(),
                          lambda d: {"groups/to-1": 3, "devices/loa-1": 1})
    assert stale == {"groups/to-1", "devices/loa-1"}


# --- durability -------------------------------------------------------------------------


def test_approval_is_on_disk_when_approve_returns(tmp_path):
    """kill -9 right after approve() returns: the approval and its audit line are there."""
    dbfile = tmp_path / "station.db"
    code = textwrap.dedent(f"""
        import os, sys, wave
        from broadcast import areas, bulletins
        from broadcast.db import open_db
        from broadcast.media import MediaLibrary
        from broadcast.tts import TextToSpeech
        from devices.audio import tone
        db = open_db({str(dbfile)!r})
        lib = MediaLibrary(db, {str(tmp_path / 'media')!r})
        w = wave.open({str(tmp_path / 'a.wav')!r}, "wb"); w.setnchannels(1); w.setsampwidth(2); w.setframerate(8000)
        w.writeframes(tone(440, 500, 8000, 1)); w.close()
        m = lib.import_file({str(tmp_path / 'a.wav')!r})
        op = areas.Actor("vanthu", areas.Role.OPERATOR); ap = areas.Actor("pct", areas.Role.APPROVER)
        bid = bulletins.create(db, op, "t", "normal", media_sha256=m.sha256)
        bulletins.submit(db, lib, TextToSpeech({str(tmp_path / 'tts')!r}), op, bid)
        bulletins.approve(db, ap, bid, "ok")
        print("approved", bid, flush=True)
        os.kill(os.getpid(), 9)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == -signal.SIGKILL and "approved" in out.stdout, out.stderr
    db = open_db(dbfile)
    bid = int(out.stdout.split()[1])
    assert bulletins.get(db, bid).state is bulletins.State.APPROVED
    assert areas.audit_log(db, "bulletin", bid)[-1]["action"] == "bulletin.approve"


def test_backup_and_retention(db, tmp_path):
    from broadcast.backup import backup_now

    old = tmp_path / "b" / "station-20000101-000000.db"
    old.parent.mkdir()
    old.write_bytes(b"x")
    path = backup_now(db, tmp_path / "b", keep_days=14)
    assert not old.exists()
    copy = open_db(path)
    assert copy.execute("SELECT COUNT(*) FROM devices").fetchone()[0] == 2


def test_lead_in_chime_is_prepended(db, lib, tts, tmp_path):
    from devices.audio import decode_file
    from tests.agent_support import dominant_frequency

    media = lib.import_file(wav_file(tmp_path / "a.wav", seconds=1.0))
    bid = bulletins.create(db, OPERATOR, "Có chuông", "normal", media_sha256=media.sha256, chime=True)
    b = bulletins.submit(db, lib, tts, OPERATOR, bid)
    assert b.audio_sha256 != media.sha256 and lib.get(b.audio_sha256).source == "chime"
    pcm = decode_file(lib.path_for(b.audio_sha256), 22050, 1)
    assert 2.3 <= len(pcm) / 44100 <= 2.6  # ~1.5 s of chime, then the 1 s bulletin
    assert abs(dominant_frequency(pcm[: 22050 // 5 * 2], 22050) - 523) < 30  # starts on C5


def test_alerts_open_and_close(db):
    from broadcast import alerts

    topics = p.Topics("phuong-test")
    t = now_ms()
    ingest = lambda ch, obj: ingest_report(db, topics, topics.device("loa-1", ch),  # noqa: E731
                                           json.dumps(obj).encode(), lambda d: {})
    ingest(p.Channel.STATUS, {"state": "offline", "at": t - 20 * 60_000})
    ingest(p.Channel.STATUS, {"state": "online", "at": t})
    ingest(p.Channel.TELEMETRY, {"at": now_ms() + 120_000, "version": "0.1.0"})  # clock 2 min ahead
    for _ in range(3):
        ingest(p.Channel.EVENTS, {"id": str(uuid.uuid4()), "type": "play_failed", "at": t, "reason": "HTTP 404"})
    kw = dict(offline_minutes=10, clock_seconds=30, failure_count=3)
    opened = {(a.device_id, a.kind) for a in alerts.evaluate(db, **kw, now=t + 1000)}
    # loa-2 never connected (created long ago relative to now + 11 min), loa-1 has a bad clock and failures
    assert ("loa-1", "clock") in opened and ("loa-1", "play_failures") in opened
    assert ("loa-1", "offline") not in opened
    later = {(a.device_id, a.kind) for a in alerts.evaluate(db, **kw, now=t + 11 * 60_000)}
    assert ("loa-2", "offline") in later
    assert not alerts.evaluate(db, **kw, now=t + 11 * 60_000 + 1)  # never duplicated
    ingest(p.Channel.TELEMETRY, {"at": now_ms(), "version": "0.1.0"})
    alerts.evaluate(db, **kw, now=t + 12 * 60_000)
    kinds = {(a.device_id, a.kind) for a in alerts.open_alerts(db)}
    assert ("loa-1", "clock") not in kinds and ("loa-2", "offline") in kinds
    assert "mất kết nối" in alerts.describe(next(a for a in alerts.open_alerts(db) if a.kind == "offline"))

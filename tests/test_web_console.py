"""The console through its HTTP surface with FastAPI's TestClient, a real SQLite file and
real espeak-ng speech: login, sessions, CSRF, rate limiting, roles, the bulletin
workflow, schedule warnings, uploads (validated by decoding, capped before the disk),
HTML escaping, path traversal, audit."""

from __future__ import annotations

import io
import re
import wave

import pytest
from fastapi.testclient import TestClient

from broadcast import areas, auth, bulletins
from broadcast.db import now_ms
from broadcast.web import create_app
from devices.audio import tone
from tests.conftest import require_tool
from tests.web_support import PASSWORD, csrf_of, logged_in, login, seed, station_config


@pytest.fixture
def web(tmp_path):
    cfg = station_config(tmp_path, web="max_upload_bytes = 2097152")
    db = seed(cfg)
    return {"cfg": cfg, "db": db, "app": create_app(cfg), "tmp": tmp_path}


def client(web) -> TestClient:
    return TestClient(web["app"])


def wav_bytes(seconds: float = 1.0) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(22050)
        w.writeframes(tone(880, int(seconds * 1000), 22050, 1))
    return buf.getvalue()


# --- accounts and sessions ---------------------------------------------------------------

def test_passwords_are_scrypt_hashes_and_verify():
    h = auth.hash_password("mot-mat-khau-dai", n=2 ** 10)
    assert h.startswith("scrypt$1024$") and "mot-mat-khau" not in h
    assert auth.verify_password("mot-mat-khau-dai", h)
    assert not auth.verify_password("mot-mat-khau-sai", h)
    assert not auth.verify_password("x", "plain-text") and not auth.verify_password("x", None)


def test_login_sets_a_strict_httponly_cookie_and_logout_ends_the_session(web):
    c = client(web)
    assert c.get("/", follow_redirects=False).headers["location"].startswith("/login")
    r = login(c, "vanthu")
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("tt_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    home = c.get("/")
    assert home.status_code == 200 and "Tổng quan hệ thống loa" in home.text and "Văn thư" in home.text
    csrf = csrf_of(home.text)
    assert c.post("/logout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    assert c.get("/", follow_redirects=False).status_code == 303
    log = [(e["actor"], e["action"]) for e in areas.audit_log(web["db"], "user")]
    assert ("vanthu", "login") in log and ("vanthu", "logout") in log


def test_forged_or_tampered_cookies_are_refused(web):
    c = client(web)
    login(c, "vanthu")
    value = c.cookies.get("tt_session")
    sid, sig = value.rsplit(".", 1)
    for forged in (sid + "." + ("0" * len(sig)), "x" * 500, sid):
        c.cookies.clear()
        c.cookies.set("tt_session", forged)
        assert c.get("/", follow_redirects=False).status_code == 303
    c.cookies.clear()
    c.cookies.set("tt_session", value)
    assert c.get("/", follow_redirects=False).status_code == 200


def test_wrong_password_is_rate_limited_per_user_and_audited(web):
    c = client(web)
    for _ in range(3):
        r = login(c, "phochutich", "sai-mat-khau-roi")
        assert r.status_code == 401 and "Sai tên đăng nhập hoặc mật khẩu" in r.text
    locked = login(c, "phochutich")  # even the right password, while locked
    assert locked.status_code == 429 and "quá nhiều lần" in locked.text
    assert login(c, "vanthu").status_code == 429  # same address is locked too
    actions = [e["action"] for e in areas.audit_log(web["db"], "user", "phochutich")]
    assert actions.count("login.failed") == 3 and "login.locked" in actions
    unknown = login(TestClient(web["app"], client=("10.0.0.9", 1234)), "khong-co-ai")
    assert unknown.status_code == 401  # same message for unknown users


def test_login_form_needs_its_csrf_cookie(web):
    c = client(web)
    r = c.post("/login", data={"username": "vanthu", "password": PASSWORD, "csrf": "forged"},
               follow_redirects=False)
    assert r.status_code == 403 and "hết hạn" in r.text


def test_every_form_needs_the_session_csrf_token(web):
    c = client(web)
    logged_in(c, "vanthu")
    r = c.post("/bulletins/new", data={"title": "Tiêu đề", "level": "normal", "text": "Nội dung", "csrf": "forged"})
    assert r.status_code == 403 and "không hợp lệ" in r.text
    r = c.post("/bulletins/new", data={"title": "Tiêu đề", "level": "normal", "text": "Nội dung"})
    assert r.status_code == 403
    assert web["db"].execute("SELECT COUNT(*) FROM bulletins").fetchone()[0] == 0


def test_password_change_needs_the_current_one_and_ends_sessions(web):
    c = client(web)
    csrf = logged_in(c, "xem")
    r = c.post("/account", data={"csrf": csrf, "current": "sai", "new": "mat-khau-moi-dai", "again": "mat-khau-moi-dai"})
    assert r.status_code == 422 and "không đúng" in r.text
    r = c.post("/account", data={"csrf": csrf, "current": PASSWORD, "new": "ngan", "again": "ngan"})
    assert r.status_code == 422 and "ít nhất 10 ký tự" in r.text
    r = c.post("/account", data={"csrf": csrf, "current": PASSWORD, "new": "mat-khau-moi-dai",
                                 "again": "mat-khau-moi-dai"}, follow_redirects=False)
    assert r.status_code == 303
    assert c.get("/", follow_redirects=False).status_code == 303
    assert login(c, "xem", "mat-khau-moi-dai").status_code == 303


# --- roles and the bulletin workflow -----------------------------------------------------

def test_bulletin_written_previewed_submitted_approved_with_audit(web):
    require_tool("espeak-ng")
    c = client(web)
    csrf = logged_in(c, "vanthu")
    pv = c.post("/bulletins/preview", data={"csrf": csrf, "text": "Kính mời bà con đi tiêm phòng."})
    assert pv.status_code == 200 and pv.headers["content-type"] == "audio/wav" and pv.content[:4] == b"RIFF"
    empty = c.post("/bulletins/preview", data={"csrf": csrf, "text": "  "})
    assert empty.status_code == 422 and "nội dung" in empty.text
    r = c.post("/bulletins/new", data={"csrf": csrf, "title": "Tiêm phòng", "level": "normal",
                                       "text": "Kính mời bà con đi tiêm phòng.", "action": "submit"},
               follow_redirects=False)
    assert r.status_code == 303, r.text[:2000]
    bid = int(r.headers["location"].rsplit("/", 1)[1])
    assert bulletins.get(web["db"], bid).state is bulletins.State.SUBMITTED
    page = c.get(f"/bulletins/{bid}")
    sha = bulletins.get(web["db"], bid).audio_sha256
    assert f"/audio/{sha}" in page.text and c.get(f"/audio/{sha}").content[:4] == b"RIFF"
    # an operator cannot approve
    r = c.post(f"/bulletins/{bid}/approve", data={"csrf": csrf})
    assert r.status_code == 422 and "chỉ người duyệt" in r.text
    a = client(web)
    acsrf = logged_in(a, "phochutich")
    queue = a.get("/bulletins")
    assert "Chờ duyệt (1)" in queue.text
    r = a.post(f"/bulletins/{bid}/reject", data={"csrf": acsrf, "reason": ""})
    assert r.status_code == 422 and "hãy ghi lý do từ chối" in r.text
    assert a.post(f"/bulletins/{bid}/approve", data={"csrf": acsrf, "reason": "Đồng ý"},
                  follow_redirects=False).status_code == 303
    assert bulletins.get(web["db"], bid).state is bulletins.State.APPROVED
    actions = [(e["actor"], e["action"]) for e in areas.audit_log(web["db"], "bulletin", bid)]
    assert actions == [("vanthu", "bulletin.create"), ("vanthu", "bulletin.submit"),
                       ("phochutich", "bulletin.approve")]
    audit_page = a.get("/audit?type=bulletin")
    assert "bulletin.approve" in audit_page.text and "phochutich" in audit_page.text


def test_viewer_cannot_write_and_pages_enforce_roles(web):
    c = client(web)
    csrf = logged_in(c, "xem")
    r = c.post("/bulletins/new", data={"csrf": csrf, "title": "x", "level": "normal", "text": "y"})
    assert r.status_code == 403
    assert c.get("/emergency").status_code == 403
    assert c.post("/groups", data={"csrf": csrf, "code": "to-9", "name": "Tổ 9"}).status_code == 403
    for path in ("/", "/bulletins", "/schedules", "/devices", "/devices/loa-a1", "/reports", "/reports/month",
                 "/audit", "/account"):
        assert c.get(path).status_code == 200, path


def test_fields_are_validated_with_vietnamese_messages_at_the_field(web):
    c = client(web)
    csrf = logged_in(c, "vanthu")
    r = c.post("/bulletins/new", data={"csrf": csrf, "title": "", "level": "loud", "text": ""})
    assert r.status_code == 422
    for msg in ("tiêu đề: bắt buộc", "mức độ: chọn thông thường, ưu tiên hoặc khẩn cấp",
                "nội dung: nhập văn bản hoặc chọn tệp âm thanh"):
        assert msg in r.text
    assert re.search(r'name="title"[^>]*>\s*</label>\s*<div class="field-error"', r.text)  # shown at the field
    t = client(web)
    tcsrf = logged_in(t, "kythuat")
    r = t.post("/groups", data={"csrf": tcsrf, "code": "Tổ 9", "name": "Tổ 9"})
    assert r.status_code == 422 and "mã tổ: chỉ dùng chữ thường không dấu" in r.text
    r = t.post("/groups", data={"csrf": tcsrf, "code": "to-9", "name": "Tổ 9", "lat": "abc", "lon": "1"})
    assert r.status_code == 422 and "gps: nhập một số" in r.text
    r = t.post("/groups", data={"csrf": tcsrf, "code": "to-9", "name": "Tổ 9", "quiet_start": "25:00",
                                "quiet_end": "05:00"})
    assert r.status_code == 422 and "HH:MM" in r.text
    r = t.post("/devices", data={"csrf": tcsrf, "id": "loa-x", "name": "Loa X", "volume": "150"})
    assert r.status_code == 422 and "âm lượng: từ 0 đến 100" in r.text
    ok = t.post("/groups", data={"csrf": tcsrf, "code": "to-9", "name": "Tổ 9", "lat": "14,42", "lon": "109.01",
                                 "quiet_start": "22:00", "quiet_end": "05:00"}, follow_redirects=False)
    assert ok.status_code == 303
    ok = t.post("/devices", data={"csrf": tcsrf, "id": "loa-x", "name": "Loa X", "groups": "to-9", "volume": "60"},
                follow_redirects=False)
    assert ok.status_code == 303 and areas.device_groups(web["db"], "loa-x") == ["to-9"]


def test_html_in_user_text_is_escaped(web):
    c = client(web)
    csrf = logged_in(c, "vanthu")
    r = c.post("/bulletins/new", data={"csrf": csrf, "title": "<script>alert(1)</script>", "level": "normal",
                                       "text": "<img src=x onerror=alert(2)>", "action": "draft"},
               follow_redirects=False)
    bid = r.headers["location"].rsplit("/", 1)[1]
    for page in (c.get(f"/bulletins/{bid}").text, c.get("/bulletins").text):
        assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "<img src=x" not in page
    assert "script-src 'self'" in c.get("/bulletins").headers["content-security-policy"]


# --- uploads and media names -------------------------------------------------------------

def test_uploaded_audio_is_validated_by_decoding(web):
    c = client(web)
    csrf = logged_in(c, "vanthu")
    bad = c.post("/bulletins/new", data={"csrf": csrf, "title": "Tệp hỏng", "level": "normal", "action": "draft"},
                 files={"audio": ("bao.mp3", b"ID3" + b"\x00" * 2000, "audio/mpeg")})
    assert bad.status_code == 422 and "không giải mã được" in bad.text
    fake = c.post("/bulletins/new", data={"csrf": csrf, "title": "Không phải âm thanh", "level": "normal"},
                  files={"audio": ("thu.wav", b"%PDF-1.4 hello", "audio/wav")})
    assert fake.status_code == 422 and "không phải âm thanh" in fake.text
    good = c.post("/bulletins/new", data={"csrf": csrf, "title": "Nhạc hiệu", "level": "normal", "action": "draft"},
                  files={"audio": ("../../etc/passwd.wav", wav_bytes(), "audio/wav")}, follow_redirects=False)
    assert good.status_code == 303, good.text[:1000]
    media = web["db"].execute("SELECT sha256, filename FROM media").fetchall()
    assert len(media) == 1 and media[0][1] == "passwd.wav"  # the name is reduced to a base name
    assert (web["cfg"].data_dir / "media" / media[0][0]).exists()


def test_oversized_uploads_are_refused_before_the_disk(web):
    c = client(web)
    csrf = logged_in(c, "vanthu")
    media_dir = web["cfg"].data_dir / "media"
    big = b"RIFF" + b"\x00" * (3 * 1024 * 1024)
    r = c.post("/bulletins/new", data={"csrf": csrf, "title": "Quá lớn", "level": "normal"},
               files={"audio": ("lon.wav", big, "audio/wav")})
    assert r.status_code == 413 and "quá lớn" in r.json()["message_vi"]

    def chunks():  # no Content-Length: the stream is cut as it passes the cap
        yield b"--b\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n" + csrf.encode() + b"\r\n"
        yield b"--b\r\nContent-Disposition: form-data; name=\"audio\"; filename=\"a.wav\"\r\n\r\n"
        for _ in range(40):
            yield b"\x00" * 100_000
        yield b"\r\n--b--\r\n"
    r = c.post("/bulletins/new", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413
    assert not [p for p in media_dir.iterdir() if p.name.startswith(".import")] if media_dir.exists() else True
    assert web["db"].execute("SELECT COUNT(*) FROM bulletins").fetchone()[0] == 0


def test_media_names_cannot_traverse(web):
    c = client(web)
    logged_in(c, "xem")
    for name in ("../station.db", "..%2Fstation.db", "%2e%2e%2fweb-secret", "a" * 64, "A" * 64):
        r = c.get(f"/audio/{name}")
        assert r.status_code == 404, name
        assert b"SQLite" not in r.content


# --- schedules ---------------------------------------------------------------------------

def approved_bulletin(web) -> int:
    db = web["db"]
    lib_path = web["tmp"] / "tone.wav"
    lib_path.write_bytes(wav_bytes(2))
    from broadcast.media import MediaLibrary

    sha = MediaLibrary(db, web["cfg"].data_dir / "media").import_file(lib_path).sha256
    bid = bulletins.create(db, areas.actor_for(db, "vanthu"), "Họp tổ", "normal", media_sha256=sha)
    db.execute("UPDATE bulletins SET state = 'submitted', audio_sha256 = ? WHERE id = ?", [sha, bid])
    bulletins.approve(db, areas.actor_for(db, "phochutich"), bid)
    return bid


def local(cfg, ms: int) -> str:
    import datetime as dt
    from zoneinfo import ZoneInfo

    return dt.datetime.fromtimestamp(ms / 1000, ZoneInfo(cfg.timezone)).strftime("%Y-%m-%dT%H:%M:%S")


def test_schedule_quiet_hours_and_overlap_warnings_before_saving(web):
    import datetime as dt
    from zoneinfo import ZoneInfo

    bid = approved_bulletin(web)
    c = client(web)
    csrf = logged_in(c, "vanthu")
    zone = ZoneInfo(web["cfg"].timezone)
    night = dt.datetime.now(zone).replace(hour=23, minute=0, second=0, microsecond=0) + dt.timedelta(days=1)
    form = {"csrf": csrf, "mode": "bulletin", "bulletin_id": str(bid), "kind": "once",
            "at": night.strftime("%Y-%m-%dT%H:%M"), "groups": "to-1", "repeat": "1"}
    pv = c.post("/schedules", data={**form, "action": "preview"})
    assert pv.status_code == 200 and "Giờ yên tĩnh" in pv.text and "Tổ dân phố 1 (to-1)" in pv.text
    saved = c.post("/schedules", data={**form, "action": "save"})
    assert "Giờ yên tĩnh" in saved.text
    assert web["db"].execute("SELECT COUNT(*) FROM schedules").fetchone()[0] == 0
    # daytime: saved; the same time again shows an overlap warning that needs confirming
    day = night.replace(hour=10)
    form["at"] = day.strftime("%Y-%m-%dT%H:%M")
    r = c.post("/schedules", data={**form, "action": "save"}, follow_redirects=False)
    assert r.status_code == 303, r.text[:3000]
    again = c.post("/schedules", data={**form, "action": "save"})
    assert "Trùng giờ" in again.text and "trùng giờ với “Họp tổ”" in again.text
    assert web["db"].execute("SELECT COUNT(*) FROM schedules").fetchone()[0] == 1
    r = c.post("/schedules", data={**form, "action": "save", "confirm": "1"}, follow_redirects=False)
    assert r.status_code == 303
    week = c.get(f"/schedules?group=to-1&week={day.date().isoformat()}")
    assert week.text.count("Họp tổ") >= 2 and "10:00" in week.text


@pytest.mark.parametrize("change, msg", [
    ({"kind": "weekly"}, "ngày trong tuần: chọn ít nhất một ngày"),
    ({"kind": "monthly", "monthday": "40"}, "ngày trong tháng: từ 1 đến 31"),
    ({"kind": "rrule", "rrule": "FREQ=SOMETIMES"}, "RRULE: không hợp lệ"),
    ({"at": "mai"}, "thời gian: nhập ngày giờ"),
    ({"groups": ""}, "nơi phát: chọn tất cả"),
    ({"repeat": "99"}, "số lần phát lại: từ 1 đến 20"),
    ({"bulletin_id": "abc"}, "bản tin: nhập một số nguyên"),
    ({"mode": "relay", "relay_url": "ftp://x", "relay_minutes": "30"}, "địa chỉ luồng"),
])
def test_schedule_form_fields_are_validated(web, change, msg):
    bid = approved_bulletin(web)
    c = client(web)
    csrf = logged_in(c, "vanthu")
    form = {"csrf": csrf, "mode": "bulletin", "bulletin_id": str(bid), "kind": "once",
            "at": local(web["cfg"], now_ms() + 3_600_000), "groups": "to-2", "repeat": "1", "action": "save", **change}
    r = c.post("/schedules", data=form)
    assert r.status_code == 422 and msg in r.text, r.text[-3000:]


def test_relay_window_and_recurring_schedules_are_saved(web):
    bid = approved_bulletin(web)
    c = client(web)
    csrf = logged_in(c, "vanthu")
    base = {"csrf": csrf, "groups": "to-2", "repeat": "1", "action": "save", "confirm": "1"}
    r = c.post("/schedules", data={**base, "mode": "relay", "relay_url": "http://vov.example/stream",
                                   "relay_minutes": "30", "kind": "daily", "at": local(web["cfg"], now_ms() + 7_200_000)},
               follow_redirects=False)
    assert r.status_code == 303, r.text[-2000:]
    for extra in ({"kind": "weekly", "weekdays": ["mo", "we", "fr"]}, {"kind": "monthly", "monthday": "15"},
                  {"kind": "rrule", "rrule": "FREQ=WEEKLY;BYDAY=SA;INTERVAL=2"}):
        r = c.post("/schedules", data={**base, "mode": "bulletin", "bulletin_id": str(bid),
                                       "at": local(web["cfg"], now_ms() + 3_600_000), **extra}, follow_redirects=False)
        assert r.status_code == 303, (extra, r.text[-2000:])
    rules = [r[0] for r in web["db"].execute("SELECT rrule FROM schedules ORDER BY id")]
    assert rules == ["FREQ=DAILY", "FREQ=WEEKLY;BYDAY=MO,WE,FR", "FREQ=MONTHLY;BYMONTHDAY=15",
                     "FREQ=WEEKLY;BYDAY=SA;INTERVAL=2"]


def test_emergency_without_a_broker_says_so(web):
    c = client(web)
    csrf = logged_in(c, "phochutich")
    r = c.post("/emergency", data={"csrf": csrf, "all": "1", "text": "Bão", "reason": "bão", "confirm": "sai"})
    assert r.status_code == 422 and "gõ đúng chữ PHÁT KHẨN CẤP" in r.text and "chưa kết nối MQTT" in r.text
    r = c.post("/emergency", data={"csrf": csrf, "text": "", "reason": "", "confirm": "PHÁT KHẨN CẤP"})
    for msg in ("Nơi phát: chọn tất cả loa", "Lý do: bắt buộc", "Nội dung: nhập văn bản"):
        assert msg in r.text
    assert web["db"].execute("SELECT COUNT(*) FROM bulletins").fetchone()[0] == 0


def test_reports_csv_and_month_page(web):
    c = client(web)
    logged_in(c, "xem")
    r = c.get("/reports?from=2026-01-01&to=2026-12-31")
    assert r.status_code == 200 and "Mức hài lòng tại quầy" in r.text and "chart-data" in r.text
    bad = c.get("/reports?from=hôm-qua")
    assert bad.status_code == 200 and "từ ngày: nhập ngày dạng" in bad.text
    csv = c.get("/reports/devices.csv?from=2026-01-01&to=2026-12-31")
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert "loa-a1" in csv.text and "attachment" in csv.headers["content-disposition"]
    month = c.get("/reports/month?month=2026-11")
    assert month.status_code == 200 and "MINH CHỨNG TIÊU CHÍ 8" in month.text and "Tổ dân phố 1" in month.text
    assert c.get("/reports/month?month=2026-13").status_code == 422


def test_admin_adds_users_and_resets_passwords(web):
    c = client(web)
    csrf = logged_in(c, "quantri")
    page = c.get("/users")
    assert page.status_code == 200 and "Phó Chủ tịch" in page.text
    bad = c.post("/users", data={"csrf": csrf, "username": "Cán Bộ", "display_name": "Cán bộ", "role": "operator",
                                 "password": "mat-khau-dai-du"})
    assert bad.status_code == 422 and "tên đăng nhập: 2-40 ký tự" in bad.text
    bad = c.post("/users", data={"csrf": csrf, "username": "canbo", "display_name": "Cán bộ", "role": "boss",
                                 "password": "mat-khau-dai-du"})
    assert bad.status_code == 422 and "Vai trò" in bad.text
    bad = c.post("/users", data={"csrf": csrf, "username": "canbo", "display_name": "Cán bộ", "role": "viewer",
                                 "password": "ngan"})
    assert bad.status_code == 422 and "ít nhất 10 ký tự" in bad.text
    ok = c.post("/users", data={"csrf": csrf, "username": "canbo", "display_name": "Cán bộ", "role": "viewer",
                                "password": "mat-khau-dai-du"}, follow_redirects=False)
    assert ok.status_code == 303
    assert login(client(web), "canbo", "mat-khau-dai-du").status_code == 303
    assert c.post("/users/canbo/password", data={"csrf": csrf, "password": "mat-khau-khac-nua"},
                  follow_redirects=False).status_code == 303
    assert login(client(web), "canbo", "mat-khau-khac-nua").status_code == 303
    actions = [e["action"] for e in areas.audit_log(web["db"], "user", "canbo")]
    assert actions[:2] == ["user.add", "user.password"] and actions.count("user.password") == 2
    op = client(web)
    logged_in(op, "vanthu")
    assert op.get("/users").status_code == 403


def test_a_running_schedule_is_stopped_with_a_reason(web):
    bid = approved_bulletin(web)
    c = client(web)
    csrf = logged_in(c, "vanthu")
    r = c.post("/schedules", data={"csrf": csrf, "mode": "bulletin", "bulletin_id": str(bid), "kind": "daily",
                                   "at": local(web["cfg"], now_ms() + 3_600_000), "groups": "to-2", "repeat": "1",
                                   "action": "save", "confirm": "1"}, follow_redirects=False)
    assert r.status_code == 303
    sid = web["db"].execute("SELECT id FROM schedules").fetchone()[0]
    page = c.get("/schedules")
    assert "Lịch đang chạy" in page.text and "FREQ=DAILY" in page.text
    r = c.post(f"/schedules/{sid}/stop", data={"csrf": csrf, "reason": ""})
    assert r.status_code == 422 and "hãy ghi lý do dừng lịch" in r.text
    r = c.post(f"/schedules/{sid}/stop", data={"csrf": csrf, "reason": "Đổi giờ phát"}, follow_redirects=False)
    assert r.status_code == 303
    db = web["db"]
    assert db.execute("SELECT active FROM schedules WHERE id = ?", [sid]).fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM occurrences WHERE schedule_id = ? AND cancelled = 0 AND start_at > ?",
                      [sid, now_ms()]).fetchone()[0] == 0
    assert "Không có lịch nào đang chạy" in c.get("/schedules").text
    entry = areas.audit_log(db, "schedule", sid)[-1]
    assert entry["action"] == "schedule.stop" and entry["detail"]["reason"] == "Đổi giờ phát"
    assert c.post(f"/schedules/{sid}/stop", data={"csrf": csrf, "reason": "x"}).status_code == 422  # already stopped


def test_a_submission_whose_speech_fails_keeps_the_draft_and_says_why(web):
    from broadcast.tts import TtsError

    class Mute:
        def speak(self, text):
            raise TtsError("espeak-ng is not installed")

    web["app"].state.console.tts = Mute()
    c = client(web)
    csrf = logged_in(c, "vanthu")
    r = c.post("/bulletins/new", data={"csrf": csrf, "title": "Mất điện", "level": "normal", "text": "Cắt điện.",
                                       "action": "submit"})
    assert r.status_code == 503 and "Chưa gửi duyệt được" in r.text and "espeak-ng is not installed" in r.text
    row = web["db"].execute("SELECT state FROM bulletins WHERE title = 'Mất điện'").fetchone()
    assert row == ("draft",)  # kept, to submit again later
    long = c.post("/bulletins/new", data={"csrf": csrf, "title": "Dài", "level": "normal", "text": "x" * 20_500})
    assert long.status_code == 422 and "tối đa 20000 ký tự" in long.text  # refused, never cut silently


def test_a_group_is_edited_from_its_stored_values(web):
    c = client(web)
    csrf = logged_in(c, "kythuat")
    page = c.get("/devices?group=to-1")
    assert 'value="Tổ dân phố 1"' in page.text and 'value="22:00"' in page.text and "<details id=\"group-form\" open" in page.text
    r = c.post("/groups", data={"csrf": csrf, "code": "to-1", "name": "Tổ dân phố 1 (Hoài Thanh)", "lat": "14.42",
                                "lon": "109.01", "quiet_start": "21:30", "quiet_end": "05:30"}, follow_redirects=False)
    assert r.status_code == 303
    row = web["db"].execute("SELECT name, lat, quiet_start FROM groups WHERE code = 'to-1'").fetchone()
    assert row == ("Tổ dân phố 1 (Hoài Thanh)", 14.42, "21:30")
    assert areas.group_members(web["db"], "to-1") == ["loa-a1", "loa-a2"]  # members kept

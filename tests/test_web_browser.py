"""The console in a real browser (Debian's Chromium driven by Playwright) against real
processes: Mosquitto, the station (`thanthien station` with its web console) and three
speaker agents in two groups.

Operator writes a bulletin, hears the TTS preview and submits it; the approver approves
it; the operator schedules it to one group 10 s ahead; the simulated nodes of that group
play it and the report page shows it played. Then the emergency flow: typed reason and
confirmation, live acks and plays on every node. Screenshots of every page at 1366×768
and on a phone (390×844) go to docs/screenshots/."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from broadcast import areas, auth, reports
from broadcast.db import now_ms, open_db
from devices import protocol as p
from devices.broker import free_port
from devices.config import toml_string
from tests.agent_support import wait_for, write_agent_config
from tests.conftest import require_tool
from tests.station_support import stop_processes

pytestmark = [pytest.mark.broker, pytest.mark.browser, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "docs" / "screenshots"
NODES = {"loa-a1": "to-1", "loa-a2": "to-1", "loa-b1": "to-2"}
PASSWORD = "mat-khau-thu-nghiem"
TZ = "Asia/Ho_Chi_Minh"


@pytest.fixture
def ward(tmp_path, broker):
    require_tool("espeak-ng")
    web_port = free_port()
    http_port = free_port()
    data = tmp_path / "station"
    cfg_path = tmp_path / "station.toml"
    cfg_path.write_text(
        f"site = \"phuong-test\"\nward_name = \"UBND phường Hoài Thanh\"\ndata_dir = {toml_string(data)}\n"
        f"allow_operator_emergency = false\n"
        f"[mqtt]\nport = {broker.port}\nreconnect_min_s = 0.05\nreconnect_max_s = 0.5\n"
        f"[http]\nhost = \"127.0.0.1\"\nport = {http_port}\npublic_url = \"http://127.0.0.1:{http_port}\"\n"
        f"[web]\nhost = \"127.0.0.1\"\nport = {web_port}\n[tts]\nengine = \"espeak-ng\"\n")
    db = open_db(data / "station.db")
    for user, role, name in (("quantri", "admin", "Quản trị"), ("vanthu", "operator", "Nguyễn Thị Văn Thư"),
                             ("phochutich", "approver", "Trần Văn Phó Chủ tịch"),
                             ("kythuat", "technician", "Lê Kỹ Thuật")):
        areas.add_user(db, user, role, name)
        auth.set_password(db, "quantri", user, PASSWORD)
    admin = areas.Actor("quantri", areas.Role.ADMIN)
    areas.save_group(db, admin, "to-1", "Tổ dân phố 1", lat=14.4213, lon=109.0012)
    areas.save_group(db, admin, "to-2", "Tổ dân phố 2", quiet_start="22:30", quiet_end="05:00")
    for dev, group in NODES.items():
        areas.save_device(db, admin, dev, f"Cụm loa {dev[-2:].upper()}", [group], location="Nhà văn hóa", volume=80)
    key = p.SigningKey.load_or_create(data / "station.key")
    procs = []
    log = open(tmp_path / "station.log", "ab")
    procs.append(subprocess.Popen([sys.executable, "-m", "thanthien", "station", "--config", str(cfg_path)],
                                  cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
    for dev in NODES:
        ndata = tmp_path / dev
        ncfg = write_agent_config(tmp_path / f"{dev}.toml", device_id=dev, data_dir=ndata, key=key,
                                  port=broker.port, sink=f"wav:{ndata / 'out.wav'}")
        procs.append(subprocess.Popen([sys.executable, "-m", "thanthien", "speaker", "--config", str(ncfg)],
                                      cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
    log.close()
    assert wait_for(lambda: db.execute("SELECT COUNT(*) FROM device_state WHERE online = 1").fetchone()[0] == 3, 60), \
        (tmp_path / "station.log").read_text()[-3000:]
    base = f"http://127.0.0.1:{web_port}"
    import urllib.request

    assert wait_for(lambda: _up(urllib.request, base), 30), (tmp_path / "station.log").read_text()[-3000:]
    # every node holds its current documents before the test goes on
    assert wait_for(lambda: db.execute("SELECT COUNT(*) FROM device_documents").fetchone()[0] >= 5, 30)
    yield {"db": db, "base": base, "tmp": tmp_path, "procs": procs}
    stop_processes(procs)


def _up(urllib_request, base: str) -> bool:
    try:
        with urllib_request.urlopen(base + "/api/v1/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def login(browser, base: str, user: str, viewport=(1366, 768)):
    ctx = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]}, locale="vi-VN",
                              timezone_id=TZ)
    page = ctx.new_page()
    page.goto(base + "/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("button:has-text('Đăng nhập')")
    page.wait_for_url(base + "/")
    return ctx, page


def shot(page, name: str, full: bool = True) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"console-{name}.png"), full_page=full)


def outcomes(db, bid: int) -> dict[str, str]:
    return {o.device_id: o.outcome.value for o in reports.outcomes(db, 0, 2**62) if o.bulletin_id == bid}


def test_bulletin_from_writing_to_proof_of_play_then_emergency(ward, chromium):
    base, db = ward["base"], ward["db"]
    # 1. the operator writes, previews and submits
    octx, op = login(chromium, base, "vanthu")
    shot(op, "dashboard")
    op.goto(base + "/bulletins")
    op.fill("input[name=title]", "Thông báo tiêm phòng")
    op.fill("#bulletin-text", "Kính mời bà con đưa trẻ đi tiêm phòng tại trạm y tế phường vào sáng thứ Bảy.")
    op.click("#tts-preview")
    op.wait_for_selector("#tts-audio:not([hidden])", timeout=60_000)
    assert "Đã tạo giọng đọc" in op.inner_text("#tts-status")
    duration = op.evaluate("() => new Promise(r => { const a = document.getElementById('tts-audio');"
                           " if (a.readyState >= 1) r(a.duration); else a.onloadedmetadata = () => r(a.duration); })")
    assert duration > 2.0  # real speech came back and the browser decoded it
    shot(op, "bulletins-write")
    op.click("button[name=action][value=submit]")
    op.wait_for_url(base + "/bulletins/*")
    bid = int(op.url.rsplit("/", 1)[1])
    assert "chờ duyệt" in op.inner_text("main")
    shot(op, "bulletin-submitted")

    # 2. the approver approves from the queue
    actx, ap = login(chromium, base, "phochutich")
    ap.goto(base + "/bulletins")
    assert "Thông báo tiêm phòng" in ap.inner_text("#queue")
    shot(ap, "bulletins-queue")
    ap.click(f"#queue form[action='/bulletins/{bid}/approve'] button")
    ap.wait_for_load_state()
    assert db.execute("SELECT state FROM bulletins WHERE id = ?", [bid]).fetchone()[0] == "approved"

    # 3. the operator schedules it to one group, 10 s ahead
    op.goto(base + f"/bulletins/{bid}")
    op.click("a:has-text('Lên lịch phát')")
    op.wait_for_url(base + f"/schedules?bulletin={bid}")
    start = now_ms() + 10_000
    at = dt.datetime.fromtimestamp(start / 1000, ZoneInfo(TZ)).strftime("%Y-%m-%dT%H:%M:%S")
    op.fill("input[name=at]", at)
    op.check("input[name=groups][value=to-1]")
    op.click("button[name=action][value=save]")
    op.wait_for_url(base + "/schedules?saved=1*")
    assert "Đã lưu lịch phát" in op.inner_text("main")
    assert "Thông báo tiêm phòng" in op.inner_text(".week")
    shot(op, "schedules")

    # 4. the nodes of that group play it; the report shows it played
    assert wait_for(lambda: outcomes(db, bid) == {"loa-a1": "played", "loa-a2": "played"}, 90), outcomes(db, bid)
    op.goto(base + "/reports")
    table = op.inner_text("#recent-plays")
    assert table.count("phát trọn") == 2 and "loa-a1" in table and "loa-a2" in table and "loa-b1" not in table
    shot(op, "reports")
    op.goto(base + f"/bulletins/{bid}")
    assert "Độ phủ: 100.0 %" in op.inner_text("main")

    # 5. emergency: typed reason and confirmation, live acks and plays
    ap.goto(base + "/emergency")
    shot(ap, "emergency")
    ap.check("input[name=all]")
    ap.fill("input[name=title]", "Bão số 5 đổ bộ")
    ap.fill("textarea[name=text]", "Bão số 5 sắp đổ bộ. Bà con khẩn trương chằng chống nhà cửa.")
    ap.fill("input[name=reason]", "Công điện của Ban chỉ huy phòng chống thiên tai tỉnh")
    ap.fill("input[name=confirm]", "phát khẩn cấp")  # wrong: must be typed exactly
    ap.click("button:has-text('PHÁT KHẨN CẤP NGAY')")
    ap.wait_for_selector(".field-error:has-text('gõ đúng chữ')")
    assert db.execute("SELECT COUNT(*) FROM bulletins WHERE level = 'emergency'").fetchone()[0] == 0
    shot(ap, "emergency-refused")
    ap.check("input[name=all]")
    ap.fill("input[name=reason]", "Công điện của Ban chỉ huy phòng chống thiên tai tỉnh")
    ap.fill("input[name=confirm]", "PHÁT KHẨN CẤP")
    ap.click("button:has-text('PHÁT KHẨN CẤP NGAY')")
    ap.wait_for_url(base + "/emergency/*", timeout=60_000)
    # the page updates itself (no reload) as nodes ack and play
    ap.wait_for_function("() => document.querySelector('#em-stats [data-k=started]').textContent.trim() === '3'",
                         timeout=60_000)
    ap.wait_for_function("() => document.querySelector('#em-stats [data-k=acked]').textContent.trim() === '3'",
                         timeout=30_000)
    shot(ap, "emergency-live")
    eid = db.execute("SELECT id FROM bulletins WHERE level = 'emergency'").fetchone()[0]
    assert wait_for(lambda: outcomes(db, eid) == {d: "played" for d in NODES}, 60), outcomes(db, eid)
    reason = [e for e in areas.audit_log(db, "bulletin", eid) if e["action"] == "bulletin.emergency_approve"]
    assert reason and reason[0]["detail"]["reason"].startswith("Công điện") and reason[0]["actor"] == "phochutich"

    # 6. a technician sends a test tone from the device page; the node acks it
    tctx, tp = login(chromium, base, "kythuat")
    tp.goto(base + "/devices/loa-a1")
    tp.click("button:has-text('Phát thử âm')")
    tp.wait_for_url(base + "/devices/loa-a1?cmd=*")
    assert wait_for(lambda: db.execute("SELECT COUNT(*) FROM acks a JOIN commands c ON c.cmd_id = a.cmd_id WHERE "
                                       "c.type = 'test_tone' AND a.status = 'done'").fetchone()[0] == 1, 30)
    tp.reload()
    assert "Phát thử âm (kythuat): " in tp.inner_text("#commands") and "xong" in tp.inner_text("#commands")
    shot(tp, "device-command")
    assert [e["action"] for e in areas.audit_log(db, "device", "loa-a1")][-1] == "device.test_tone"
    tctx.close()

    # 7. the dashboard refreshes itself: a node going away shows without reloading
    op.goto(base + "/")
    ward["procs"][3].send_signal(signal.SIGKILL)  # loa-b1
    op.wait_for_function("() => document.querySelector('#stats [data-k=offline]').textContent.trim() === '1'",
                         timeout=60_000)
    assert "Mất kết nối" in op.inner_text("#nodes tr[data-id=loa-b1]")
    shot(op, "dashboard-live")
    octx.close()
    actx.close()

    # 8. every page, at 1366×768 and on a phone
    tour = [("dashboard", "/"), ("bulletins", "/bulletins"), ("bulletin", f"/bulletins/{bid}"),
            ("schedules", "/schedules?group=to-1"), ("emergency", "/emergency"),
            ("emergency-live", f"/emergency/{db.execute('SELECT MAX(o.id) FROM occurrences o WHERE priority = 3').fetchone()[0]}"),
            ("devices", "/devices"), ("device", "/devices/loa-a1"), ("reports", "/reports"),
            ("month", "/reports/month"), ("audit", "/audit"), ("users", "/users"),
            ("account", "/account")]
    for size, suffix in (((1366, 768), ""), ((390, 844), "-phone")):
        ctx, page = login(chromium, base, "quantri", size)
        problems: list[str] = []  # script errors and CSP violations show up here
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
        for name, path in tour:
            page.goto(base + path)
            page.wait_for_load_state("networkidle")
            assert page.locator("h1").count() >= 1, path
            overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"{path} scrolls sideways by {overflow}px at {size}"
            shot(page, name + suffix)
        assert not problems, problems
        ctx.close()
        lctx = chromium.new_context(viewport={"width": size[0], "height": size[1]}, locale="vi-VN")
        lp = lctx.new_page()
        lp.goto(base + "/login")
        shot(lp, "login" + suffix, full=False)
        lctx.close()

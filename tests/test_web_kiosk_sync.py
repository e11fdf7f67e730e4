"""The contract from both sides: the kiosk's own sync client (kiosk/sync.py) against the
station's console served on loopback by uvicorn — ratings and feedback leave the kiosk's
outbox only once stored, a second round sends nothing twice, the catalogue and the
announcements come down, and a revoked token stops the loop."""

from __future__ import annotations

import json

import pytest

from broadcast import areas, bulletins, kiosk_feed
from broadcast.web import WebServer
from devices.config import load_config, toml_string
from tests.web_support import seed, station_config

kiosk_core = pytest.importorskip("kiosk.core")
kiosk_sync = pytest.importorskip("kiosk.sync")
kiosk_config = pytest.importorskip("kiosk.config")


@pytest.fixture
def linked(tmp_path):
    (tmp_path / "st").mkdir()
    cfg = station_config(tmp_path / "st")
    db = seed(cfg)
    server = WebServer(cfg, port=0).start()
    token = kiosk_feed.add_token(db, "quantri", "kiosk", "kiosk-01")
    (tmp_path / "token").write_text(token + "\n", "utf-8")
    kpath = tmp_path / "kiosk.toml"
    kpath.write_text(f"site = \"phuong-test\"\nkiosk_id = \"kiosk-01\"\ncounter_id = \"quay-2\"\n"
                     f"data_dir = {toml_string(tmp_path / 'kiosk')}\n[ward]\nname = \"UBND phường Thử Nghiệm\"\n"
                     f"[station]\nurl = \"http://127.0.0.1:{server.port}\"\ntoken_file = {toml_string(tmp_path / 'token')}\n",
                     "utf-8")
    kiosk = kiosk_core.Kiosk(load_config(kpath, kiosk_config.KioskConfig))
    yield {"db": db, "kiosk": kiosk, "sync": kiosk_sync.StationSync.from_config(kiosk), "tmp": tmp_path}
    kiosk.close()
    server.close()


def test_kiosk_outbox_reaches_the_station_once(linked, tmp_path):
    kiosk, sync, db = linked["kiosk"], linked["sync"], linked["db"]
    kiosk.rate(5, "button")
    kiosk.rate(2, "screen")
    kiosk.feedback("gop_y", "Cần thêm ghế chờ ở quầy một cửa.", phone="0905123456")
    first = sync.run_once()
    assert first.get("ok") is True and first.get("sent") == 3, first
    assert db.execute("SELECT COUNT(*) FROM kiosk_ratings WHERE kiosk_id = 'kiosk-01' AND counter_id = 'quay-2'"
                      ).fetchone()[0] == 2
    assert db.execute("SELECT text FROM kiosk_feedback").fetchone()[0] == "Cần thêm ghế chờ ở quầy một cửa."
    assert first.get("outbox") == 0
    again = sync.run_once()
    assert again.get("ok") is True and again.get("sent") == 0 and db.execute("SELECT COUNT(*) FROM kiosk_ratings").fetchone()[0] == 2


def test_catalogue_and_announcements_come_down_and_revocation_stops(linked, tmp_path):
    kiosk, sync, db = linked["kiosk"], linked["sync"], linked["db"]
    cat = tmp_path / "cat.json"
    cat.write_text(json.dumps({"procedures": [{"ma_tthc": "1.001193", "ten_tthc": "Đăng ký khai sinh",
                                               "linh_vuc": "Hộ tịch"}]}, ensure_ascii=False), "utf-8")
    kiosk_feed.import_catalogue(db, "quantri", cat)
    op, ap = areas.actor_for(db, "vanthu"), areas.actor_for(db, "phochutich")
    bid = bulletins.create(db, op, "Lịch tiêm phòng", "normal", text="Sáng thứ Bảy tại trạm y tế.")
    db.execute("UPDATE bulletins SET state = 'submitted' WHERE id = ?", [bid])
    bulletins.approve(db, ap, bid)
    report = sync.run_once()
    assert report.get("ok") is True, report
    assert kiosk.procedure("1.001193") is not None
    assert [a["title"] for a in kiosk.announcements()] == ["Lịch tiêm phòng"]
    assert sync.run_once().get("catalogue") == "unchanged"  # ETag / 304
    kiosk_feed.revoke_tokens(db, "quantri", "kiosk", "kiosk-01")
    kiosk.rate(4, "button")
    stopped = sync.run_once()
    assert stopped.get("status") == "unauthorized", stopped
    assert stopped.get("outbox") == 1  # nothing lost while the token is wrong

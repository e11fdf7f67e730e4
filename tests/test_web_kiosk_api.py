"""The kiosk ↔ station contract (docs/kiosk-api.md) against the real app and a real
SQLite file: tokens, idempotent batches in one transaction, 422 naming the field,
size limits, catalogue ETag, announcements, and the satisfaction aggregation."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from broadcast import areas, bulletins, kiosk_feed
from broadcast.web import create_app
from tests.web_support import seed, station_config

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def station(tmp_path):
    cfg = station_config(tmp_path)
    db = seed(cfg)
    token = kiosk_feed.add_token(db, "quantri", "kiosk", "kiosk-01")
    client = TestClient(create_app(cfg))
    client.headers["Authorization"] = f"Bearer {token}"
    return {"cfg": cfg, "db": db, "client": client, "token": token, "tmp": tmp_path}


def rating(level=5, **kw) -> dict:
    item = {"uuid": str(uuid.uuid4()), "kind": "rating", "created_ms": int(time.time() * 1000) - 1000,
            "counter_id": "quay-1", "level": level, "source": "button", "officer_id": "can-bo-03",
            "procedure_code": "1.001193", "field": "Hộ tịch",
            "factors": {"access": 5, "procedures": 4, "officers": 5, "results": 5, "feedback": 4},
            "reasons": [], "comment": None}
    item.update(kw)
    return item


def feedback(**kw) -> dict:
    item = {"uuid": str(uuid.uuid4()), "kind": "feedback", "created_ms": int(time.time() * 1000) - 1000,
            "counter_id": "quay-1", "category": "gop_y", "text": "Nên có thêm ghế chờ.", "phone": "0905 123 456",
            "name": None}
    item.update(kw)
    return item


def post(station, items, kiosk_id="kiosk-01", **kw):
    return station["client"].post("/api/v1/kiosk/submissions", json={"kiosk_id": kiosk_id, "items": items}, **kw)


def test_batch_is_stored_once_and_a_resend_lists_duplicates(station):
    items = [rating(), rating(level=2), feedback()]
    r = post(station, items)
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": [i["uuid"] for i in items], "duplicates": []}
    again = post(station, items + [rating()])
    assert again.status_code == 200
    assert again.json()["duplicates"] == [i["uuid"] for i in items] and len(again.json()["accepted"]) == 1
    db = station["db"]
    assert db.execute("SELECT COUNT(*) FROM kiosk_ratings").fetchone()[0] == 3
    assert db.execute("SELECT COUNT(*) FROM kiosk_feedback").fetchone()[0] == 1
    # the same uuid twice in one batch is stored once
    dup = rating()
    r = post(station, [dup, dup])
    assert r.json() == {"accepted": [dup["uuid"]], "duplicates": [dup["uuid"]]}


@pytest.mark.parametrize("change, field, vi", [
    ({"level": 6}, "items[1].level", "Mức đánh giá phải từ 1 đến 5"),
    ({"level": True}, "items[1].level", "Mức đánh giá"),
    ({"uuid": "not-a-uuid"}, "items[1].uuid", "UUID"),
    ({"counter_id": "Quầy 1"}, "items[1].counter_id", "Mã quầy"),
    ({"source": "voice"}, "items[1].source", "Nguồn đánh giá"),
    ({"factors": {"speed": 5}}, "items[1].factors.speed", "SIPAS"),
    ({"factors": {"access": 0}}, "items[1].factors.access", "từ 1 đến 5"),
    ({"reasons": ["x" * 65]}, "items[1].reasons", "Lý do"),
    ({"comment": "x" * 2001}, "items[1].comment", "2000"),
    ({"officer_id": "x" * 65}, "items[1].officer_id", "64"),
    ({"created_ms": "hôm nay"}, "items[1].created_ms", "mili giây"),
    ({"created_ms": -5}, "items[1].created_ms", "không âm"),
    ({"kind": "vote"}, "items[1].kind", "rating"),
])
def test_a_malformed_item_refuses_the_whole_batch_naming_the_field(station, change, field, vi):
    good = rating()
    r = post(station, [good, rating(**change)])
    assert r.status_code == 422
    body = r.json()
    assert set(body) == {"error", "field", "message", "message_vi"}
    assert body["error"] == "invalid" and body["field"] == field and vi in body["message_vi"], body
    assert station["db"].execute("SELECT COUNT(*) FROM kiosk_ratings").fetchone()[0] == 0  # nothing stored


@pytest.mark.parametrize("change, field", [({"category": "khen"}, "items[0].category"), ({"text": ""}, "items[0].text"),
                                           ({"text": "x" * 4001}, "items[0].text"),
                                           ({"phone": "gọi tôi"}, "items[0].phone")])
def test_feedback_fields_are_validated(station, change, field):
    r = post(station, [feedback(**change)])
    assert r.status_code == 422 and r.json()["field"] == field


def test_tokens_kiosk_mismatch_and_revocation(station, tmp_path):
    c = station["client"]
    assert post(station, [], kiosk_id="kiosk-02").status_code == 403
    r = c.post("/api/v1/kiosk/submissions", json={"kiosk_id": "kiosk-01", "items": []},
               headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    r = c.get("/api/v1/kiosk/announcements", headers={"Authorization": ""})
    assert r.status_code == 401
    # a user's script token is not a kiosk token
    user_token = kiosk_feed.add_token(station["db"], "quantri", "user", "vanthu")
    assert c.get("/api/v1/kiosk/announcements", headers={"Authorization": f"Bearer {user_token}"}).status_code == 403
    # revocation from the CLI, as an operator would do it
    cfg_path = station["tmp"] / "station.toml"
    out = subprocess.run([sys.executable, "-m", "thanthien", "station", "--config", str(cfg_path), "--as", "quantri",
                          "kiosk-token", "revoke", "kiosk-01"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert post(station, []).status_code == 401
    added = subprocess.run([sys.executable, "-m", "thanthien", "station", "--config", str(cfg_path), "--as", "quantri",
                            "kiosk-token", "add", "kiosk-01"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert added.returncode == 0, added.stderr
    new_token = added.stdout.strip()
    assert len(new_token) >= 40
    assert station["db"].execute("SELECT COUNT(*) FROM api_tokens WHERE token_sha256 = ?",
                                 [new_token]).fetchone()[0] == 0  # only the hash is stored
    assert c.get("/api/v1/kiosk/announcements", headers={"Authorization": f"Bearer {new_token}"}).status_code == 200
    actions = [e["action"] for e in areas.audit_log(station["db"], "kiosk")]
    assert actions.count("token.add") == 2 and "token.revoke" in actions


def test_size_limits(station):
    too_many = [rating() for _ in range(kiosk_feed.MAX_ITEMS + 1)]
    assert post(station, too_many).status_code == 413
    big = [rating(comment="x" * 2000) for _ in range(480)]  # about 1.3 MiB
    r = post(station, big)
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    assert station["db"].execute("SELECT COUNT(*) FROM kiosk_ratings").fetchone()[0] == 0
    not_json = station["client"].post("/api/v1/kiosk/submissions", content=b"{nope",
                                      headers={"Content-Type": "application/json"})
    assert not_json.status_code == 422 and not_json.json()["field"] == "body"


def test_catalogue_with_etag_and_announcements(station, tmp_path):
    c = station["client"]
    assert c.get("/api/v1/kiosk/catalogue").status_code == 404
    cat = tmp_path / "cat.json"
    cat.write_text(json.dumps({"procedures": [{"ma_tthc": "1.001193", "ten_tthc": "Đăng ký khai sinh",
                                               "linh_vuc": "Hộ tịch"}]}, ensure_ascii=False), "utf-8")
    kiosk_feed.import_catalogue(station["db"], "quantri", cat)
    r = c.get("/api/v1/kiosk/catalogue")
    assert r.status_code == 200
    body = r.json()
    assert body["procedures"][0]["ten_tthc"] == "Đăng ký khai sinh" and len(body["version"]) == 64
    assert r.headers["etag"] == f'"{body["version"]}"'
    assert c.get("/api/v1/kiosk/catalogue", headers={"If-None-Match": r.headers["etag"]}).status_code == 304
    db = station["db"]
    op, ap = areas.actor_for(db, "vanthu"), areas.actor_for(db, "phochutich")
    shown = bulletins.create(db, op, "Lịch tiêm phòng", "normal", text="Tiêm phòng sáng thứ Bảy.")
    db.execute("UPDATE bulletins SET state = 'submitted' WHERE id = ?", [shown])
    bulletins.approve(db, ap, shown)
    bulletins.create(db, op, "Bản nháp", "normal", text="Chưa duyệt")
    em = bulletins.create(db, op, "Bão", "emergency", text="Bão")
    db.execute("UPDATE bulletins SET state = 'approved' WHERE id = ?", [em])
    ann = c.get("/api/v1/kiosk/announcements").json()["announcements"]
    assert [a["id"] for a in ann] == [shown]
    assert ann[0]["text"] == "Tiêm phòng sáng thứ Bảy." and ann[0]["level"] == "normal" and ann[0]["created_ms"] > 0


def test_satisfaction_per_factor_officer_field_month(station):
    items = [rating(level=5, officer_id="can-bo-01", field="Hộ tịch"),
             rating(level=4, officer_id="can-bo-01", field="Hộ tịch", factors={"access": 2}),
             rating(level=2, officer_id="can-bo-02", field="Đất đai", factors={"access": 5, "results": 1}),
             rating(level=5, officer_id=None, field=None, factors={})]
    assert post(station, items).status_code == 200
    sat = kiosk_feed.satisfaction(station["db"], 0, 2**62, station["cfg"].timezone)
    assert sat["overall"].answers == 4 and sat["overall"].pct == 75.0 and not sat["overall"].meets_target
    factors = {f.key: f for f in sat["factors"]}
    assert factors["access"].answers == 3 and factors["access"].satisfied == 2
    assert factors["results"].answers == 2 and factors["results"].pct == 50.0
    officers = {o.key: (o.answers, o.pct, o.meets_target) for o in sat["officers"]}
    assert officers["can-bo-01"] == (2, 100.0, True) and officers["can-bo-02"] == (1, 0.0, False)
    assert {f.key for f in sat["fields"]} == {"", "Hộ tịch", "Đất đai"}
    assert len(sat["months"]) == 1 and sat["months"][0].answers == 4


def test_a_kiosk_clock_still_at_1970_is_stored_and_counted_when_received(station):
    r = post(station, [rating(created_ms=5_000, level=5), feedback(created_ms=10**13)])
    assert r.status_code == 200 and len(r.json()["accepted"]) == 2
    now = int(time.time() * 1000)
    sat = kiosk_feed.satisfaction(station["db"], now - 3_600_000, now + 3_600_000, station["cfg"].timezone)
    assert sat["overall"].answers == 1 and sat["feedback"] == 1
    assert len(kiosk_feed.recent_feedback(station["db"], now - 3_600_000, now + 3_600_000)) == 1

"""The JSON API for scripts with a user's bearer token, and the CLI that manages console
accounts, tokens and the kiosk catalogue (real processes, real SQLite)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from broadcast import areas, auth, bulletins, kiosk_feed
from broadcast.db import open_db
from broadcast.web import create_app
from tests.web_support import logged_in, login, seed, station_config

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def web(tmp_path):
    cfg = station_config(tmp_path)
    db = seed(cfg)
    return {"cfg": cfg, "db": db, "client": TestClient(create_app(cfg)), "tmp": tmp_path,
            "path": tmp_path / "station.toml"}


def station_cli(web, *args, stdin: str | None = None, actor: str = "quantri"):
    return subprocess.run([sys.executable, "-m", "thanthien", "station", "--config", str(web["path"]), "--as", actor,
                           *args], input=stdin, capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_script_token_acts_as_its_user(web):
    c = web["client"]
    op_token = kiosk_feed.add_token(web["db"], "quantri", "user", "vanthu")
    h = {"Authorization": f"Bearer {op_token}"}
    r = c.post("/api/v1/bulletins", json={"title": "Lịch cắt điện", "level": "normal", "text": "Cắt điện sáng mai."},
               headers=h)
    assert r.status_code == 201, r.text
    bid = r.json()["id"]
    assert c.post(f"/api/v1/bulletins/{bid}/approve", json={}, headers=h).status_code == 403  # an operator
    bad = c.post("/api/v1/bulletins", json={"title": "", "level": "loud"}, headers=h)
    assert bad.status_code == 422 and bad.json()["field"] in ("title", "level") and bad.json()["message_vi"]
    listed = c.get("/api/v1/bulletins?state=draft", headers=h).json()["bulletins"]
    assert [b["id"] for b in listed] == [bid]
    assert areas.audit_log(web["db"], "bulletin", bid)[0]["actor"] == "vanthu"
    pv = c.post("/api/v1/schedules/preview", json={"bulletin_id": bid, "kind": "daily", "at": "2031-01-01T06:30",
                                                   "groups": ["to-2"]}, headers=h)
    assert pv.status_code == 200 and set(pv.json()) == {"occurrences", "quiet_conflicts", "overlaps"}
    saved = c.post("/api/v1/schedules", json={"bulletin_id": bid, "kind": "once", "at": "2031-01-01T06:30",
                                              "groups": ["to-2"]}, headers=h)
    assert saved.status_code == 422 and "chỉ lên lịch được bản tin đã duyệt" in saved.json()["message_vi"]
    dash = c.get("/api/v1/dashboard", headers=h).json()
    assert dash["summary"]["devices"] == 3 and {n["id"] for n in dash["nodes"]} == {"loa-a1", "loa-a2", "loa-b1"}
    assert c.get("/api/v1/dashboard").status_code == 401
    assert c.get("/api/v1/audit?limit=5", headers=h).json()["entries"][0]["action"] == "bulletin.create"


def test_cookie_calls_need_the_csrf_header(web):
    c = web["client"]
    csrf = logged_in(c, "vanthu")
    assert c.get("/api/v1/dashboard").status_code == 200
    body = {"title": "Tin", "level": "normal", "text": "Nội dung"}
    assert c.post("/api/v1/bulletins", json=body).status_code == 401
    assert c.post("/api/v1/bulletins", json=body, headers={"X-CSRF-Token": csrf}).status_code == 201


def test_cancel_from_the_page_needs_a_reason(web):
    c = web["client"]
    csrf = logged_in(c, "vanthu")
    bid = bulletins.create(web["db"], areas.actor_for(web["db"], "vanthu"), "Tin hủy", "normal", text="x")
    r = c.post(f"/bulletins/{bid}/cancel", data={"csrf": csrf, "reason": ""})
    assert r.status_code == 422 and "hãy ghi lý do hủy" in r.text
    assert c.post(f"/bulletins/{bid}/cancel", data={"csrf": csrf, "reason": "Trùng nội dung"},
                  follow_redirects=False).status_code == 303
    assert bulletins.get(web["db"], bid).state is bulletins.State.CANCELLED


def test_cli_users_passwords_tokens_and_catalogue(web, tmp_path):
    r = station_cli(web, "user-add", "canbo", "--role", "viewer", "--name", "Cán bộ", "--password-stdin",
                    stdin="mat-khau-tu-cli\n")
    assert r.returncode == 0, r.stderr
    assert login(TestClient(create_app(web["cfg"])), "canbo", "mat-khau-tu-cli").status_code == 303
    short = station_cli(web, "passwd", "canbo", "--password-stdin", stdin="ngan\n")
    assert short.returncode == 2 and "ít nhất 10 ký tự" in short.stderr
    assert station_cli(web, "passwd", "canbo", "--password-stdin", stdin="mat-khau-moi-cli\n").returncode == 0
    db = open_db(web["cfg"].data_dir / "station.db")
    assert auth.authenticate(db, "canbo", "mat-khau-moi-cli") is not None
    tok = station_cli(web, "api-token", "add", "canbo", "--label", "báo cáo tự động")
    assert tok.returncode == 0, tok.stderr
    c = TestClient(create_app(web["cfg"]))
    assert c.get("/api/v1/groups", headers={"Authorization": f"Bearer {tok.stdout.strip()}"}).status_code == 200
    assert station_cli(web, "api-token", "revoke", "canbo").returncode == 0
    assert c.get("/api/v1/groups", headers={"Authorization": f"Bearer {tok.stdout.strip()}"}).status_code == 401
    nobody = station_cli(web, "api-token", "add", "khong-co")
    assert nobody.returncode == 2 and "không có tài khoản" in nobody.stderr
    cat = tmp_path / "cat.json"
    cat.write_text(json.dumps([{"ma_tthc": "1.000656", "ten_tthc": "Chứng thực bản sao"}], ensure_ascii=False), "utf-8")
    r = station_cli(web, "catalogue-import", str(cat))
    assert r.returncode == 0 and "1 thủ tục" in r.stdout, r.stderr
    (tmp_path / "bad.json").write_text("{", "utf-8")
    bad = station_cli(web, "catalogue-import", str(tmp_path / "bad.json"))
    assert bad.returncode == 2 and "không phải JSON" in bad.stderr


def test_dashboard_filters_by_group_and_problems(web):
    c = web["client"]
    logged_in(c, "xem")
    all_rows = c.get("/api/v1/dashboard").json()
    assert len(all_rows["nodes"]) == 3
    to1 = c.get("/api/v1/dashboard?group=to-1").json()
    assert {n["id"] for n in to1["nodes"]} == {"loa-a1", "loa-a2"} and to1["summary"]["devices"] == 3
    assert len(c.get("/api/v1/dashboard?problems=true").json()["nodes"]) == 3  # never connected
    page = c.get("/?group=to-2")
    assert "loa-b1" in page.text and "loa-a1" not in page.text and 'data-poll="/api/v1/dashboard?group=to-2"' in page.text

"""Console test helpers: a station config and database on disk, users with passwords,
a TestClient logged in through the real login form."""

from __future__ import annotations

import re
from pathlib import Path

from broadcast import areas, auth
from broadcast.config import StationConfig
from broadcast.db import open_db
from devices.config import load_config, toml_string

PASSWORD = "mat-khau-thu-nghiem"
USERS = {"quantri": "admin", "vanthu": "operator", "phochutich": "approver", "kythuat": "technician",
         "xem": "viewer"}


def station_config(tmp: Path, extra: str = "", web: str = "") -> StationConfig:
    path = tmp / "station.toml"
    path.write_text(f"site = \"phuong-test\"\nward_name = \"UBND phường Thử Nghiệm\"\n"
                    f"data_dir = {toml_string(tmp / 'data')}\n{extra}\n[tts]\nengine = \"espeak-ng\"\n"
                    f"[web]\nlogin_max_failures = 3\nlogin_window_s = 60\n{web}\n")
    return load_config(path, StationConfig)


def seed(cfg: StationConfig, password: str = PASSWORD):
    """Users of every role (with console passwords), two groups, three devices."""
    db = open_db(cfg.data_dir / "station.db")
    names = {"quantri": "Quản trị", "vanthu": "Văn thư", "phochutich": "Phó Chủ tịch", "kythuat": "Kỹ thuật",
             "xem": "Người xem"}
    for user, role in USERS.items():
        areas.add_user(db, user, role, names[user])
        auth.set_password(db, "quantri", user, password)
    admin = areas.Actor("quantri", areas.Role.ADMIN)
    areas.save_group(db, admin, "to-1", "Tổ dân phố 1", quiet_start="22:00", quiet_end="05:00")
    areas.save_group(db, admin, "to-2", "Tổ dân phố 2")
    for dev, group in (("loa-a1", "to-1"), ("loa-a2", "to-1"), ("loa-b1", "to-2")):
        areas.save_device(db, admin, dev, f"Loa {dev}", [group])
    return db


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html[:500]
    return m.group(1)


def login(client, username: str, password: str = PASSWORD):
    page = client.get("/login")
    return client.post("/login", data={"username": username, "password": password, "csrf": csrf_of(page.text),
                                       "next": "/"}, follow_redirects=False)


def logged_in(client, username: str) -> str:
    """Log in; returns the session's CSRF token (read from a page)."""
    r = login(client, username)
    assert r.status_code == 303, r.text[:500]
    return csrf_of(client.get("/account").text)

"""Demo data and role processes for `thanthien demo` (kept apart from the supervisor)."""

from __future__ import annotations

import dataclasses
import random
import uuid
from pathlib import Path

from devices.broker import free_port
from devices.config import toml_string

DEMO_SITE = "phuong-demo"
GROUPS = {"to-1": "Tổ dân phố 1", "to-2": "Tổ dân phố 2", "to-3": "Tổ dân phố 3"}
DEMO_TEXT = ("Đài truyền thanh phường xin thông báo. Sáng thứ Bảy tuần này, trạm y tế phường tổ chức tiêm phòng "
             "cho trẻ em dưới năm tuổi. Kính mời bà con đưa các cháu đến đúng giờ.")
EMERGENCY_TEXT = ("Thông báo khẩn cấp. Bão số năm đang tiến vào đất liền. Đề nghị bà con khẩn trương chằng chống "
                  "nhà cửa, không ra biển, di chuyển đến nơi trú ẩn an toàn theo hướng dẫn của tổ dân phố.")
#: (username, role, display name); the console password of every demo account
USERS = (("admin", "admin", "Quản trị"), ("vanthu", "operator", "Văn thư đài"),
         ("phochutich", "approver", "Phó Chủ tịch UBND"), ("kythuat", "technician", "Kỹ thuật"))
DEMO_PASSWORD = "thanthien-demo"
HISTORY_DAYS = 3
#: the morning and afternoon news of the past days, as the nodes would have reported them
HISTORY_RULE = "FREQ=DAILY;BYHOUR=6,17;BYMINUTE=30;BYSECOND=0"


def station_has_console() -> bool:
    from broadcast.config import StationConfig

    return "web" in {f.name for f in dataclasses.fields(StationConfig)}


def write_station_config(base: Path, mqtt_port: int, http_port: int, web_port: int | None = None) -> Path:
    cfg = base / "station" / "station.toml"
    web = f"[web]\nhost = \"127.0.0.1\"\nport = {web_port}\n" if web_port else ""
    cfg.write_text(
        f"site = {toml_string(DEMO_SITE)}\nward_name = \"UBND phường Demo\"\n"
        f"data_dir = {toml_string(base / 'station')}\nsigning_key = {toml_string(base / 'station' / 'station.key')}\n"
        f"[mqtt]\nport = {mqtt_port}\n[http]\nhost = \"127.0.0.1\"\nport = {http_port}\n"
        f"public_url = \"http://127.0.0.1:{http_port}\"\n{web}[tts]\ntimeout_s = 3\n", "utf-8")
    return cfg


def seed(base: Path, cfg_path: Path, devices: list[str]) -> None:
    """Groups, devices, users and one approved bulletin played every 10 minutes (idempotent)."""
    from broadcast import areas, bulletins, schedules
    from broadcast.config import StationConfig
    from broadcast.db import now_ms, open_db
    from broadcast.media import MediaLibrary
    from broadcast.tts import TextToSpeech
    from devices.config import load_config

    cfg = load_config(cfg_path, StationConfig)
    db = open_db(cfg.data_dir / "station.db")
    try:
        if db.execute("SELECT COUNT(*) FROM users").fetchone()[0]:
            return
        for user, role, name in USERS:
            areas.add_user(db, user, role, name)
        if station_has_console():
            from broadcast.auth import set_password

            for user, _role, _name in USERS:
                set_password(db, "admin", user, DEMO_PASSWORD)
        admin = areas.Actor("admin", areas.Role.ADMIN)
        for code, name in GROUPS.items():
            areas.save_group(db, admin, code, name)  # no quiet hours: a demo is tried at any hour
        for dev in devices:
            group = dev.split("-")[1] + "-" + dev.split("-")[2]
            areas.save_device(db, admin, dev, f"Cụm loa {dev}", [group])
        lib = MediaLibrary(db, cfg.data_dir / "media")
        tts = TextToSpeech.from_settings(cfg.data_dir / "tts-cache", cfg.tts)
        operator = areas.actor_for(db, "vanthu")
        approver = areas.actor_for(db, "phochutich")
        bid = bulletins.create(db, operator, "Thông báo tiêm phòng", "normal", text=DEMO_TEXT)
        bulletins.submit(db, lib, tts, operator, bid)  # offline here: espeak-ng speaks it, marked as fallback
        bulletins.approve(db, approver, bid)
        # ready to send from the console or the CLI: an approved emergency bulletin
        eid = bulletins.create(db, operator, "Cảnh báo bão khẩn cấp", "emergency", text=EMERGENCY_TEXT)
        bulletins.submit(db, lib, tts, operator, eid)
        bulletins.approve(db, approver, eid)
        seed_history(db, cfg, operator, bid, devices)
        start = now_ms() + 60_000
        schedules.add_schedule(db, operator, cfg.timezone, cfg.schedule_horizon_h * 3_600_000, bulletin_id=bid,
                               rule="FREQ=MINUTELY;INTERVAL=10", dtstart=start, targets=schedules.Targets(all=True))
    finally:
        db.conn.close()


def seed_history(db, cfg, operator, bulletin_id: int, devices: list[str], days: int = HISTORY_DAYS,
                 seed: int = 9) -> int:
    """The past few days as the station would have recorded them, so reports have content.

    A daily schedule (06:30 and 17:30) that ended a minute ago, its past occurrences for
    every node, and what the nodes reported: status changes (one node offline for five
    hours yesterday, so it missed a bulletin) and play_started/play_finished events, with a
    few failures and a late start. Returns the number of occurrences created.
    """
    from broadcast import schedules
    from broadcast.db import now_ms, transaction

    rng = random.Random(seed)
    now = now_ms()
    day = 86_400_000
    begin = now - days * day
    sid = schedules.add_schedule(db, operator, cfg.timezone, cfg.schedule_horizon_h * 3_600_000,
                                 bulletin_id=bulletin_id, rule=HISTORY_RULE, dtstart=begin, valid_until=now - 60_000,
                                 targets=schedules.Targets(all=True))
    media_ms = db.execute("SELECT m.duration_ms FROM bulletins b JOIN media m ON m.sha256 = b.audio_sha256 "
                          "WHERE b.id = ?", [bulletin_id]).fetchone()[0]
    starts = [ms for ms in schedules.expand(HISTORY_RULE, begin, cfg.timezone, begin, now - 10 * 60_000)]
    offline_dev = devices[-1]
    off_from, off_to = now - day - 8 * 3_600_000, now - day - 3 * 3_600_000
    with transaction(db):
        for dev in devices:
            db.execute("INSERT INTO status_history VALUES (?, 1, ?)", [dev, begin])
        db.execute("INSERT INTO status_history VALUES (?, 0, ?)", [offline_dev, off_from])
        db.execute("INSERT INTO status_history VALUES (?, 1, ?)", [offline_dev, off_to])
        for ms in starts:
            oid = f"s{sid}-{ms}"
            db.execute("INSERT OR IGNORE INTO occurrences (id, schedule_id, bulletin_id, start_at, priority) "
                       "VALUES (?, ?, ?, ?, 1)", [oid, sid, bulletin_id, ms])
            for dev in devices:
                db.execute("INSERT OR IGNORE INTO occurrence_devices VALUES (?, ?)", [oid, dev])
                if dev == offline_dev and off_from <= ms < off_to:
                    continue  # the node was off: nothing reported, the report says so
                started = ms + rng.randint(0, 40)
                events = [("play_started", started, started, None, None, None)]
                roll = rng.random()
                if roll < 0.04:
                    events.append(("play_failed", started + 200, started, None, 0, "audio device busy"))
                elif roll < 0.07:  # started late after a reboot
                    events = [("missed", ms + 95_000, None, None, None, "95 s late (node was off or busy)")]
                else:
                    events.append(("play_finished", started + media_ms, started, started + media_ms, media_ms, None))
                for etype, at, s_at, e_at, dur, reason in events:
                    db.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                               [str(uuid.uuid4()), dev, etype, at, oid, f"b{bulletin_id}", s_at, e_at, dur,
                                70, reason, at + rng.randint(20, 400)])
    return len(starts)


def emergency_bulletin(cfg_path: Path) -> int | None:
    """The id of the demo's approved emergency bulletin (None once it is no longer approved)."""
    from broadcast.config import StationConfig
    from broadcast.db import open_db
    from devices.config import load_config

    cfg = load_config(cfg_path, StationConfig)
    db = open_db(cfg.data_dir / "station.db")
    try:
        row = db.execute("SELECT id FROM bulletins WHERE level = 'emergency' AND state = 'approved' "
                         "ORDER BY id LIMIT 1").fetchone()
        return row[0] if row else None
    finally:
        db.conn.close()


def start_station(sup, exe: list[str], base: Path, mqtt_port: int, key, started_at: float | None = None) -> str:
    """Seed, start the station; returns what to print (URLs, logins, commands to try).

    ``started_at`` (time.monotonic() when the demo began) lets it say how long the console
    took to answer."""
    import time

    from .demo import DEMO_GROUPS, Child

    http_port = free_port()
    web_port = free_port() if station_has_console() else None
    cfg = write_station_config(base, mqtt_port, http_port, web_port)
    devices = [f"loa-{DEMO_GROUPS[i % len(DEMO_GROUPS)]}-{i // len(DEMO_GROUPS) + 1:02d}" for i in range(6)]
    seed(base, cfg, devices)
    sup.start(Child("station", exe + ["station", "--config", str(cfg)]))
    cli = f"thanthien station --config {cfg} --as phochutich"
    lines = [f"máy trạm: media http://127.0.0.1:{http_port}; lệnh, ví dụ: {cli} bulletin list"]
    if web_port:
        from devices.broker import wait_for_port

        up = wait_for_port("127.0.0.1", web_port, 60)
        ready = f"  (trả lời sau {time.monotonic() - started_at:.0f} giây)" if up and started_at is not None else ""
        lines.append(f"  bảng điều khiển: http://127.0.0.1:{web_port}/"
                     + (ready if up else "  (chưa mở được sau 60 giây; xem logs/station.log)"))
        lines.append("  tài khoản: " + ", ".join(f"{u} ({n})" for u, _r, n in USERS) + f" — mật khẩu: {DEMO_PASSWORD}")
    emergency = emergency_bulletin(cfg)
    if emergency is not None:
        lines.append(f"  phát khẩn cấp ngay (bản tin {emergency} đã duyệt): {cli} emergency --bulletin {emergency} --all "
                     f"--reason \"diễn tập\"")
    import datetime as dt

    today = dt.date.today()
    lines.append(f"  báo cáo {HISTORY_DAYS} ngày qua: thanthien station --config {cfg} report devices "
                 f"--from {today - dt.timedelta(days=HISTORY_DAYS)} --to {today - dt.timedelta(days=1)}")
    return "\n".join(lines)


def write_kiosk_config(base: Path, station_url: str | None, token_file: Path | None) -> Path:
    """The demo kiosk: the sample catalogue, read-aloud into a wav file, synced to the demo station."""
    from kiosk.config import KioskConfig

    fields = {f.name for f in dataclasses.fields(KioskConfig)}
    root = Path(__file__).resolve().parent.parent
    kiosk_dir = base / "kiosk"
    lines = [f"site = {toml_string(DEMO_SITE)}", 'kiosk_id = "kiosk-demo"', 'counter_id = "quay-1"',
             f"data_dir = {toml_string(kiosk_dir)}"]
    catalogue = root / "config" / "procedures.sample.json"
    if "catalogue" in fields and catalogue.exists():
        lines.append(f"catalogue = {toml_string(catalogue)}")
    lines += ["[ward]", 'name = "UBND phường Demo"',
              'hotlines = [{ label = "Đường dây nóng Chủ tịch UBND phường", number = "0256 3861 234" }]',
              'reception_hours = ["Sáng: 7 giờ 00 – 11 giờ 30", "Chiều: 13 giờ 30 – 17 giờ 00"]']
    if station_url and token_file:
        lines += ["[station]", f"url = {toml_string(station_url)}", f"token_file = {toml_string(token_file)}",
                  "sync_interval_s = 10"]
    if "audio" in fields:
        lines += ["[audio]", f"sink = {toml_string('wav:' + str(kiosk_dir / 'doc-to.wav'))}"]
    if "tts" in fields:
        lines += ["[tts]", "timeout_s = 3"]
    cfg = kiosk_dir / "kiosk.toml"
    cfg.write_text("\n".join(lines) + "\n", "utf-8")
    return cfg


def kiosk_token(base: Path) -> tuple[str | None, Path | None]:
    """(console URL, token file) when the demo station serves the kiosk API; a token is issued once."""
    import tomllib

    station_cfg = base / "station" / "station.toml"
    if not station_cfg.exists():
        return None, None
    web = tomllib.loads(station_cfg.read_text("utf-8")).get("web")
    if not web:
        return None, None
    token_file = base / "kiosk" / "station-token"
    if not token_file.exists():
        from broadcast.config import StationConfig
        from broadcast.db import open_db
        from broadcast.kiosk_feed import add_token
        from devices.config import load_config

        cfg = load_config(station_cfg, StationConfig)
        db = open_db(cfg.data_dir / "station.db")
        try:
            token = add_token(db, "admin", "kiosk", "kiosk-demo", "make demo")
        finally:
            db.conn.close()
        token_file.write_text(token + "\n", "utf-8")
        token_file.chmod(0o600)
    return f"http://{web['host']}:{web['port']}", token_file


def start_kiosk(sup, exe: list[str], base: Path, mqtt_port: int) -> str:
    """The kiosk UI in a window where a display exists, otherwise under Xvfb with screenshots."""
    import os

    from devices.display import XvfbProcess

    from .demo import Child

    url, token_file = kiosk_token(base)
    cfg = write_kiosk_config(base, url, token_file)
    argv = exe + ["kiosk", "run", "--config", str(cfg), "--size", "1024x600"]
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        sup.start(Child("kiosk", argv))
        return "kiosk: cửa sổ 1024x600 trên màn hình này" + (f", đồng bộ với {url}" if url else "")
    xvfb = XvfbProcess(1024, 600, 24).start()
    sup.children.append(Child("xvfb", [], proc=xvfb.proc, last=True))  # outlives the kiosk drawing on it
    shots = base / "kiosk" / "screens"
    shots.mkdir(parents=True, exist_ok=True)
    sup.start(Child("kiosk", argv + ["--screenshot-dir", str(shots)], env={"DISPLAY": xvfb.display}))
    return f"kiosk: không có màn hình, chạy dưới Xvfb {xvfb.display}; ảnh chụp từng màn hình tại {shots}"

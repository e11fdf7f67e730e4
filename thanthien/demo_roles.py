"""Demo data and role processes for `thanthien demo` (kept apart from the supervisor)."""

from __future__ import annotations

from pathlib import Path

from devices.broker import free_port
from devices.config import toml_string

DEMO_SITE = "phuong-demo"
GROUPS = {"to-1": "Tổ dân phố 1", "to-2": "Tổ dân phố 2", "to-3": "Tổ dân phố 3"}
DEMO_TEXT = ("Đài truyền thanh phường xin thông báo. Sáng thứ Bảy tuần này, trạm y tế phường tổ chức tiêm phòng "
             "cho trẻ em dưới năm tuổi. Kính mời bà con đưa các cháu đến đúng giờ.")


def write_station_config(base: Path, mqtt_port: int, http_port: int) -> Path:
    cfg = base / "station" / "station.toml"
    cfg.write_text(
        f"site = {toml_string(DEMO_SITE)}\nward_name = \"UBND phường Demo\"\n"
        f"data_dir = {toml_string(base / 'station')}\nsigning_key = {toml_string(base / 'station' / 'station.key')}\n"
        f"[mqtt]\nport = {mqtt_port}\n[http]\nhost = \"127.0.0.1\"\nport = {http_port}\n"
        f"public_url = \"http://127.0.0.1:{http_port}\"\n[tts]\ntimeout_s = 3\n", "utf-8")
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
        for user, role, name in (("admin", "admin", "Quản trị"), ("vanthu", "operator", "Văn thư đài"),
                                 ("phochutich", "approver", "Phó Chủ tịch UBND"), ("kythuat", "technician", "Kỹ thuật")):
            areas.add_user(db, user, role, name)
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
        start = now_ms() + 60_000
        schedules.add_schedule(db, operator, cfg.timezone, cfg.schedule_horizon_h * 3_600_000, bulletin_id=bid,
                               rule="FREQ=MINUTELY;INTERVAL=10", dtstart=start, targets=schedules.Targets(all=True))
    finally:
        db.conn.close()


def start_station(sup, exe: list[str], base: Path, mqtt_port: int, key) -> str:
    from .demo import DEMO_GROUPS, Child

    http_port = free_port()
    cfg = write_station_config(base, mqtt_port, http_port)
    devices = [f"loa-{DEMO_GROUPS[i % len(DEMO_GROUPS)]}-{i // len(DEMO_GROUPS) + 1:02d}" for i in range(6)]
    seed(base, cfg, devices)
    sup.start(Child("station", exe + ["station", "--config", str(cfg)]))
    return (f"media server http://127.0.0.1:{http_port}; users vanthu (soạn), phochutich (duyệt), kythuat — "
            f"e.g. thanthien station --config {cfg} --as phochutich bulletin list")

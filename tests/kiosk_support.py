"""Helpers for kiosk tests: a config file in a temp folder, the sample catalogue."""

from __future__ import annotations

from pathlib import Path

from devices.config import toml_string

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_JSON = ROOT / "config" / "procedures.sample.json"
SAMPLE_CSV = ROOT / "config" / "procedures.sample.csv"


def write_kiosk_config(tmp: Path, *, station_url: str | None = None, token: str | None = None,
                       pin_hash: str | None = None, buttons: bool = False, extra: str = "", usb_path: Path | None = None,
                       catalogue: Path | None = SAMPLE_JSON, idle_timeout_s: int = 60) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    lines = [
        'site = "phuong-hoai-thanh"', 'kiosk_id = "kiosk-01"', 'counter_id = "quay-1"',
        f"data_dir = {toml_string(str(tmp / 'data'))}", f"idle_timeout_s = {idle_timeout_s}",
    ]
    if catalogue:
        lines.append(f"catalogue = {toml_string(str(catalogue))}")
    lines += [
        "[ward]", 'name = "UBND phường Hoài Thanh"',
        'hotlines = [{ label = "Đường dây nóng Chủ tịch UBND phường", number = "0256 3861 234" },'
        ' { label = "Bộ phận Một cửa", number = "0256 3861 000" }]',
        'reception_hours = ["Sáng: 7 giờ 00 – 11 giờ 30", "Chiều: 13 giờ 30 – 17 giờ 00"]',
        "[[officers]]", 'id = "can-bo-01"', 'name = "Nguyễn Thị Hoa"', 'title = "Công chức Tư pháp - Hộ tịch"',
        "[[officers]]", 'id = "can-bo-02"', 'name = "Trần Văn Minh"', 'title = "Công chức Văn hóa - Xã hội"',
        "[tts]", 'engine = "espeak-ng"', "[audio]", f"sink = {toml_string('wav:' + str(tmp / 'speech.wav'))}",
    ]
    if pin_hash or usb_path:
        lines += ["[admin]"]
        lines += [f"pin_hash = {toml_string(pin_hash)}"] if pin_hash else []
        lines += [f"usb_path = {toml_string(str(usb_path))}"] if usb_path else []
    if station_url:
        token_file = tmp / "token"
        token_file.write_text(token or "")
        lines += ["[station]", f"url = {toml_string(station_url)}", f"token_file = {toml_string(str(token_file))}",
                  "sync_interval_s = 5"]
    if buttons:
        lines += ["[buttons]", "enabled = true", "bounce_ms = 0", "response_interval_s = 3"]
        for level, (pin, led) in enumerate([(5, 12), (6, 16), (13, 20), (19, 21), (26, 25)], 1):
            lines += ["[[buttons.buttons]]", f"level = {level}", f"pin = {pin}", f"led_pin = {led}"]
    path = tmp / "kiosk.toml"
    path.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    return path

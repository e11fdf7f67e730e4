"""The kiosk's tools from the command line: stats, export, PIN hash, sync, bad configs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kiosk.pin import verify_pin
from tests.kiosk_support import write_kiosk_config


def run(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "thanthien", "kiosk", *args], capture_output=True, text=True,
                          input=stdin, timeout=60)


def test_stats_and_export(tmp_path):
    cfg = write_kiosk_config(tmp_path)
    from devices.config import load_config
    from kiosk.config import KioskConfig
    from kiosk.core import Kiosk

    with Kiosk(load_config(cfg, KioskConfig)) as kiosk:
        kiosk.rate(5, "button")
        kiosk.rate(4, "screen", officer_id="can-bo-01", factors={"officers": 5})
        kiosk.rate(1, "screen", officer_id="can-bo-02", factors={"officers": 1})
        kiosk.feedback("gop_y", "Cần thêm ghế chờ")
    r = run("stats", "--json", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    (overall,) = json.loads(r.stdout)
    assert overall["answers"] == 3 and overall["pct"] == 66.7 and overall["meets_target"] is False
    r = run("stats", "--by", "officer", "--config", str(cfg))
    assert "Nguyễn Thị Hoa" in r.stdout and "100.0 %" in r.stdout and "chưa đạt" in r.stdout
    r = run("stats", "--month", "2026/11", "--config", str(cfg))
    assert r.returncode == 2 and "month" in r.stderr
    out = tmp_path / "fb.csv"
    r = run("export", "--kind", "feedback", "-o", str(out), "--config", str(cfg))
    assert r.returncode == 0 and "Cần thêm ghế chờ" in out.read_text(encoding="utf-8")
    r = run("fields", "--config", str(cfg))
    assert "Hộ tịch" in r.stdout


def test_pin_hash():
    r = run("pin-hash", "--stdin", stdin="482913\n")
    assert r.returncode == 0 and verify_pin("482913", r.stdout.strip())
    for bad in ("12\n", "abcd\n", "\n", "1" * 40 + "\n"):
        r = run("pin-hash", "--stdin", stdin=bad)
        assert r.returncode == 2 and "4 to 12 digits" in r.stderr


def test_sync_without_station_says_how_to_fix(tmp_path):
    cfg = write_kiosk_config(tmp_path, catalogue=None)
    r = run("sync", "--config", str(cfg))
    assert r.returncode == 2 and "[station] url" in r.stderr
    cfg = write_kiosk_config(tmp_path, catalogue=None, station_url="http://127.0.0.1:9", token="")
    r = run("sync", "--config", str(cfg))
    assert r.returncode == 2 and "no usable token" in r.stderr
    cfg = write_kiosk_config(tmp_path, catalogue=None, station_url="http://127.0.0.1:9", token="abc")
    r = run("sync", "--config", str(cfg))
    assert r.returncode == 1 and json.loads(r.stdout)["status"] == "offline"


@pytest.mark.parametrize("extra, key", [
    ("[buttons]\nenabled = true\n[[buttons.buttons]]\nlevel = 6\npin = 5\n", "buttons.buttons[0].level"),
    ("[buttons]\n[[buttons.buttons]]\nlevel = 1\npin = 40\n", "buttons.buttons[0].pin"),
    ("[admin]\npin_hash = \"1234\"\n", "admin.pin_hash"),
    ("[buttons]\n[[buttons.buttons]]\nlevel = 1\npin = 5\nlabel = \"\"\n", "buttons.buttons[0].label"),
    ("[[officers]]\nid = \"Cán bộ\"\nname = \"x\"\n", "officers[2].id"),
])
def test_bad_kiosk_config_names_the_key(tmp_path, extra, key):
    cfg = write_kiosk_config(tmp_path, catalogue=None, extra=extra)
    r = subprocess.run([sys.executable, "-m", "thanthien", "config", "check", "kiosk", str(cfg)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and key in r.stderr, r.stderr

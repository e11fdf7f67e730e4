"""Telex typing and the spoken summary of a procedure (with real espeak-ng speech)."""

from __future__ import annotations

import wave

import pytest

from kiosk import catalogue
from kiosk.speech import Reader, spoken_summary
from kiosk.telex import apply_key, type_text
from tests.conftest import require_tool
from tests.kiosk_support import SAMPLE_JSON, write_kiosk_config


@pytest.mark.parametrize("keys, text", [
    ("ddawng kys keets hoon", "đăng ký kết hôn"), ("nguwowif", "người"), ("hoaf", "hòa"), ("cuar", "của"),
    ("quaan", "quân"), ("giaays", "giấy"), ("Vieetj Nam", "Việt Nam"), ("thur tucj", "thủ tục"),
    ("phuwowngf", "phường"), ("ddieenj thoaij", "điện thoại"), ("xin chaof", "xin chào"), ("ass", "as"),
    ("hoaz", "hoa"), ("123", "123"),
])
def test_telex(keys, text):
    assert type_text(keys) == text


def test_tone_key_without_vowel_is_a_letter():
    assert apply_key("", "s") == "s" and apply_key("b", "f") == "bf"


def test_spoken_summary_and_reading_into_a_wav(tmp_path):
    require_tool("espeak-ng")
    p = next(x for x in catalogue.read_file(SAMPLE_JSON) if x.code == "1.000894")
    text = spoken_summary(p)
    assert text.startswith("Thủ tục đăng ký kết hôn.") and "Thời hạn giải quyết" in text and "Hồ sơ gồm" in text
    from devices.config import load_config
    from kiosk.config import KioskConfig

    cfg = load_config(write_kiosk_config(tmp_path), KioskConfig)
    reader = Reader(cfg)
    done = []
    reader.read("Xin chào Ông Bà.", on_done=done.append)
    reader._thread.join(30)
    assert done == [None] and reader.last_engine == "espeak-ng"
    with wave.open(cfg.audio.sink[4:]) as w:
        assert w.getnframes() > w.getframerate() * 0.5
    assert len(list((tmp_path / "data" / "tts").iterdir())) >= 1  # cached for the next citizen

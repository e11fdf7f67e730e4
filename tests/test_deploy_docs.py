"""The deployment guides stay true to the code: both languages, the pins of the example
configs, the commands that exist, and the README still opens with `make demo` / `make test`."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from thanthien.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
ROLES = ("station", "kiosk", "speaker")
DEFAULT_BUTTON_PINS = [5, 6, 13, 19, 26]
DEFAULT_LED_PINS = [12, 16, 20, 21, 25]


def doc(role: str) -> str:
    return (ROOT / "docs" / f"deploy-{role}.md").read_text()


@pytest.mark.parametrize("role", ROLES)
def test_each_guide_has_both_languages_and_the_checks(role):
    text = doc(role)
    assert "## Tiếng Việt" in text and "## English" in text
    assert text.index("## Tiếng Việt") < text.index("## English")
    assert f"make install ROLE={role}" in text and "--dry-run" in text
    assert f"thanthien config check {role}" in text or f"config check {role}" in text
    assert f"journalctl -u thanthien-{role}" in text
    assert "timedatectl" in text and "logrotate" in text
    assert "```\n" in text.split("## Tiếng Việt")[0], "a diagram before the sections"


@pytest.mark.parametrize("role", ROLES)
def test_commands_named_in_the_guides_exist(role):
    """Every `thanthien X Y` written in a guide is a real command of the CLI, or one that the
    kiosk↔station contract (docs/kiosk-api.md) specifies for the station."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    contract = (ROOT / "docs" / "kiosk-api.md").read_text()
    for cmd, action in set(re.findall(r"(?:thanthien|\$T) (fleet|station|config|keys) ([a-z][a-z-]+)", doc(role))):
        p = sub[cmd]
        actions = [a for a in p._actions if getattr(a, "choices", None) and isinstance(a.choices, dict)]
        exists = any(action in a.choices for a in actions)
        assert exists or f"thanthien {cmd} {action}" in contract, f"`thanthien {cmd} {action}` in deploy-{role}.md"


def test_speaker_wiring_matches_the_example_config():
    cfg = tomllib.loads((ROOT / "config" / "speaker.example.toml").read_text())
    pin = cfg["amp"]["pin"]
    text = doc("speaker")
    assert f"GPIO{pin}" in text and f"[amp] pin = {pin}" in text
    assert "aplay -l" in text and "plughw:" in text


def test_kiosk_wiring_gives_the_default_button_and_led_pins():
    text = doc("kiosk")
    for level, (button, led) in enumerate(zip(DEFAULT_BUTTON_PINS, DEFAULT_LED_PINS), start=1):
        assert re.search(rf"GPIO{button} +\(\d+\) ●-+ \[ {level} \]", text), f"button {level}"
        assert re.search(rf"GPIO{led} +\(\d+\) ●---\[330 Ω\]---\|>\|---\+  LED of button {level}", text)
        assert re.search(rf"level = {level}\npin = {button}\nled_pin = {led}\n", text)
    assert "aplay -l" in text
    example = tomllib.loads((ROOT / "config" / "kiosk.example.toml").read_text())
    buttons = example.get("buttons", {}).get("buttons")
    if buttons:  # when the example config lists the buttons, the guide shows the same pins
        assert [b["pin"] for b in sorted(buttons, key=lambda b: b["level"])] == DEFAULT_BUTTON_PINS
        assert [b.get("led_pin") for b in sorted(buttons, key=lambda b: b["level"])] == DEFAULT_LED_PINS


def test_readme_starts_with_the_two_commands_and_links_the_guides():
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```sh\n", 1)[1].split("```", 1)[0]
    assert first_block == "make demo\nmake test\n"
    assert readme.index("```sh") < 30
    for role in ROLES:
        assert f"docs/deploy-{role}.md" in readme

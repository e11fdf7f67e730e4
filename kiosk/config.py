"""The counter kiosk's configuration schema (`thanthien kiosk --config FILE`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from broadcast.config import TtsSettings
from devices.config import SITE_FIELD, AudioSettings, LoggingSettings
from devices.typed import field


@dataclass(frozen=True)
class Hotline:
    label: str = field(min_len=1, max_len=100)
    number: str = field(pattern=r"[0-9 .+()-]{3,20}", pattern_help="a phone number")


@dataclass(frozen=True)
class WardSettings:
    name: str = field(min_len=1, max_len=200, help="e.g. 'UBND phường Hoài Thanh'")
    emblem: Path | None = field(None, help="PNG of the emblem shown on the home screen")
    hotlines: list[Hotline] = field(default_factory=list, max_len=10)
    reception_hours: list[str] = field(default_factory=list, max_len=10)


@dataclass(frozen=True)
class StationLink:
    url: str | None = field(None, pattern=r"https?://[^\s]+", pattern_help="the station's base URL")
    token_file: Path | None = field(None, help="file holding the kiosk's API token")
    sync_interval_s: int = field(30, min=5, max=3600)


@dataclass(frozen=True)
class AnswerButton:
    level: int = field(min=1, max=5, help="SIPAS level this button gives: 1 (Rất không hài lòng) … 5 (Rất hài lòng)")
    pin: int = field(min=0, max=27, help="BCM GPIO pin of the button (to ground; internal pull-up)")
    led_pin: int | None = field(None, min=0, max=27, help="BCM GPIO pin of the button's LED, if any")
    label: str | None = field(None, min_len=1, max_len=60,
                              help="what the button says (default: the SIPAS wording of its level)")


@dataclass(frozen=True)
class ButtonSettings:
    enabled: bool = False
    buttons: list[AnswerButton] = field(default_factory=list, max_len=5)
    bounce_ms: int = field(50, min=0, max=1000)
    response_interval_s: float = field(3.0, min=0.5, max=60, help="presses within this time after one are ignored")
    pull_up: bool = True


@dataclass(frozen=True)
class Officer:
    id: str = field(**SITE_FIELD)
    name: str = field(min_len=1, max_len=100)
    title: str = field("", max_len=100, help="e.g. 'Công chức Tư pháp - Hộ tịch'")
    photo: Path | None = field(None, help="portrait (PNG/JPEG) shown in the survey")


@dataclass(frozen=True)
class AdminSettings:
    pin_hash: str | None = field(None, pattern=r"scrypt\$\d+\$\d+\$\d+\$[0-9a-f]{32}\$[0-9a-f]{64}",
                                 pattern_help="a hash printed by `thanthien kiosk pin-hash`")
    usb_path: Path = field(Path("/media"), help="where USB sticks are mounted, for catalogue import and export")


@dataclass(frozen=True)
class KioskConfig:
    site: str = field(**SITE_FIELD)
    kiosk_id: str = field(**SITE_FIELD)
    data_dir: Path = field(help="SQLite database (catalogue, ratings, outbox) and caches")
    ward: WardSettings = field(help="what the home screen shows")
    counter_id: str = field("quay-1", **SITE_FIELD)
    station: StationLink = field(default_factory=StationLink)
    idle_timeout_s: int = field(60, min=10, max=3600)
    satisfaction_target_pct: int = field(85, min=1, max=100)
    catalogue: Path | None = field(None, help="catalogue file imported at start when the database has none")
    buttons: ButtonSettings = field(default_factory=ButtonSettings)
    officers: list[Officer] = field(default_factory=list, max_len=100)
    admin: AdminSettings = field(default_factory=AdminSettings)
    tts: TtsSettings = field(default_factory=TtsSettings)
    audio: AudioSettings = field(default_factory=AudioSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)

"""The counter kiosk's configuration schema (`thanthien kiosk --config FILE`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from devices.config import SITE_FIELD, LoggingSettings
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
class KioskConfig:
    site: str = field(**SITE_FIELD)
    kiosk_id: str = field(**SITE_FIELD)
    data_dir: Path = field(help="SQLite database (catalogue, ratings, outbox) and caches")
    ward: WardSettings = field(help="what the home screen shows")
    counter_id: str = field("quay-1", **SITE_FIELD)
    station: StationLink = field(default_factory=StationLink)
    idle_timeout_s: int = field(60, min=10, max=3600)
    satisfaction_target_pct: int = field(85, min=1, max=100)
    logging: LoggingSettings = field(default_factory=LoggingSettings)

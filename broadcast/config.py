"""The station's configuration schema (`thanthien station --config FILE`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from devices.config import SITE_FIELD, LoggingSettings
from devices.mqtt import MqttSettings
from devices.typed import field


@dataclass(frozen=True)
class HttpSettings:
    host: str = field("127.0.0.1", min_len=1, max_len=253)
    port: int = field(8080, min=1, max=65535)
    public_url: str | None = field(None, pattern=r"https?://[^\s]+",
                                   pattern_help="the URL nodes and kiosks use to reach this station",
                                   help="defaults to http://HOST:PORT")
    max_upload_bytes: int = field(100 * 1024 * 1024, min=1024)


@dataclass(frozen=True)
class WebSettings:
    enabled: bool = field(True, help="serve the operator console and the JSON API")
    host: str = field("127.0.0.1", min_len=1, max_len=253)
    port: int = field(8000, min=1, max=65535)
    session_secret_file: Path | None = field(None, help="HMAC key for session cookies; default DATA_DIR/web-secret "
                                                        "(created with mode 0600 on first start)")
    session_hours: float = field(12.0, min=0.1, max=24 * 30)
    secure_cookies: bool = field(False, help="mark cookies Secure (set when the console is served over HTTPS)")
    login_max_failures: int = field(5, min=1, max=1000, help="failed logins per user and per address in the window")
    login_window_s: int = field(300, min=10, max=86_400)
    max_upload_bytes: int = field(50 * 1024 * 1024, min=1024, help="largest audio upload from the console")


@dataclass(frozen=True)
class TtsSettings:
    engine: str = field("gtts", choices=("gtts", "espeak-ng"))
    language: str = field("vi", max_len=10)
    tld: str = field("com.vn", max_len=20, help="Google domain gTTS uses, gives the accent")
    slow: bool = False
    timeout_s: float = field(15.0, min=1, max=120)
    fallback: str = field("espeak-ng", choices=("espeak-ng", "none"))
    espeak_voice: str = field("vi", max_len=40)


@dataclass(frozen=True)
class BackupSettings:
    dir: Path | None = field(None, help="where daily SQLite backups go; default DATA_DIR/backups")
    keep_days: int = field(14, min=1, max=3650)


@dataclass(frozen=True)
class StationConfig:
    site: str = field(**SITE_FIELD, help="ward code, e.g. 'phuong-hoai-thanh'")
    ward_name: str = field(min_len=1, max_len=200)
    data_dir: Path = field(help="SQLite database, media library, TTS cache, backups")
    signing_key: Path | None = field(None, help="Ed25519 key file; default DATA_DIR/station.key (created on first start)")
    timezone: str = field("Asia/Ho_Chi_Minh", max_len=64)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    web: WebSettings = field(default_factory=WebSettings)
    tts: TtsSettings = field(default_factory=TtsSettings)
    backup: BackupSettings = field(default_factory=BackupSettings)
    schedule_horizon_h: int = field(48, min=24, max=24 * 14)
    allow_operator_emergency: bool = field(False, help="let operators (not only approvers) send an emergency now")
    offline_alert_minutes: int = field(10, min=1, max=24 * 60)
    clock_alert_seconds: int = field(30, min=1, max=3600, help="alert when a node's clock is off by more")
    failure_alert_count: int = field(3, min=1, max=1000, help="alert after this many failed plays in 24 h")
    alerts_topic: str | None = field(None, max_len=200, pattern=r"[^#+\x00]+",
                                     pattern_help="an MQTT topic without wildcards",
                                     help="also publish alerts here, e.g. for the province's monitoring")
    logging: LoggingSettings = field(default_factory=LoggingSettings)

    @property
    def session_secret_path(self) -> Path:
        return self.web.session_secret_file or self.data_dir / "web-secret"

    @property
    def signing_key_path(self) -> Path:
        return self.signing_key or self.data_dir / "station.key"

"""TOML configuration for every role, loaded into typed, validated dataclasses.

Each role owns its schema (this module holds the speaker and fleet ones, the station's
lives in ``broadcast.config``, the kiosk's in ``kiosk.config``); they share the loader,
the ``[mqtt]`` and ``[logging]`` tables and the error format: the file, the dotted key,
what was expected and what was found. Unknown keys are errors.
"""

from __future__ import annotations

import logging
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from .errors import ConfigError
from .mqtt import MqttSettings
from .protocol import ID_HELP, ID_PATTERN
from .typed import field, structure

T = TypeVar("T")

MAX_CONFIG_BYTES = 1024 * 1024
SITE_FIELD = dict(pattern=ID_PATTERN.pattern, pattern_help=ID_HELP)


@dataclass(frozen=True)
class LoggingSettings:
    level: str = field("INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    json: bool = field(False, help="one JSON object per line (for journald/Loki)")


def load_config(path: Path | str, schema: type[T]) -> T:
    """Read ``path`` and build ``schema`` from it, or raise ConfigError naming the key."""
    path = Path(path)
    source = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError([f"file is {size} bytes; a config file may be at most {MAX_CONFIG_BYTES}"], source=source)
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(["file not found; copy one of the examples in config/ and edit it"], source=source) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"not UTF-8 text (byte {exc.start}); save the file as UTF-8"], source=source) from None
    except OSError as exc:
        raise ConfigError([f"cannot read the file: {exc.strerror}"], source=source) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"], source=source) from None
    return structure(schema, data, source=source, base_dir=path.parent.resolve(), error=ConfigError)


def toml_string(value: object) -> str:
    """A TOML basic string (for configs the project generates)."""
    out = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if c >= " " else f"\\u{ord(c):04x}" for c in out) + '"'


def exit_on_config_error(exc: ConfigError) -> "NoReturn":  # type: ignore[name-defined]  # noqa: F821
    """Print a config error the way every role does and exit with status 2."""
    print(f"thanthien: invalid configuration\n{exc}", file=sys.stderr)
    raise SystemExit(2)


def setup_logging(settings: LoggingSettings, name: str) -> None:
    """Structured logs to stdout (journald picks them up under systemd)."""
    import json as _json

    class JsonFormatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            out = {"ts": round(record.created, 3), "level": record.levelname, "logger": record.name,
                   "msg": record.getMessage(), "role": name}
            if record.exc_info:
                out["exc"] = self.formatException(record.exc_info)
            return _json.dumps(out, ensure_ascii=False)

    handler = logging.StreamHandler(sys.stdout)
    if settings.json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level)


# --- speaker node ---------------------------------------------------------------------


@dataclass(frozen=True)
class AudioSettings:
    sink: str = field("pyaudio", pattern=r"pyaudio|null|wav:.+",
                      pattern_help="'pyaudio', 'null' or 'wav:PATH'")
    device: str | None = field(None, max_len=200, help="ALSA/PortAudio output device name (pyaudio sink)")
    sample_rate: int = field(48_000, choices=(22_050, 44_100, 48_000))
    channels: int = field(2, min=1, max=2)
    buffer_ms: int = field(200, min=20, max=5000)
    fade_ms: int = field(300, min=0, max=5000)


@dataclass(frozen=True)
class AmpSettings:
    pin: int | None = field(None, min=0, max=27, help="BCM GPIO pin of the amplifier relay; none = no relay")
    active_high: bool = True
    warmup_ms: int = field(1500, min=0, max=30_000)
    tail_ms: int = field(2000, min=0, max=120_000)


@dataclass(frozen=True)
class CacheSettings:
    max_bytes: int = field(512 * 1024 * 1024, min=1024 * 1024)
    max_media_bytes: int = field(100 * 1024 * 1024, min=1024)
    download_timeout_s: float = field(60.0, min=1, max=3600)


@dataclass(frozen=True)
class SpeakerConfig:
    site: str = field(**SITE_FIELD, help="ward code, e.g. 'phuong-hoai-thanh'")
    device_id: str = field(**SITE_FIELD)
    data_dir: Path = field(help="where the node keeps its SQLite state and media cache")
    station_keys: list[str] = field(min_len=1, max_len=4,
                                    help="base64 Ed25519 public keys of the station (print one with `thanthien keys public KEYFILE`)")
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    audio: AudioSettings = field(default_factory=AudioSettings)
    amp: AmpSettings = field(default_factory=AmpSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    volume: int = field(70, min=0, max=100)
    emergency_volume: int = field(100, min=0, max=100)
    telemetry_interval_s: int = field(60, min=1, max=3600)
    max_clock_skew_s: int = field(30, min=1, max=3600)
    logging: LoggingSettings = field(default_factory=LoggingSettings)


# --- fleet tools (technician) ----------------------------------------------------------


@dataclass(frozen=True)
class BrokerAdminSettings:
    """Where the ward broker's accounts live and how to make Mosquitto reload them."""

    dir: Path = field(Path("/etc/mosquitto/thanthien"), help="password file, ACL, accounts registry, certificates")
    reload_command: list[str] = field(default_factory=lambda: ["systemctl", "reload", "mosquitto"],
                                      help="run after the password file or ACL changed")
    public_host: str = field("192.168.1.10", min_len=1, max_len=253,
                             help="the address speaker nodes use to reach the broker and station")
    tls_port: int = field(8883, min=1, max=65535)
    station_url: str = field("http://192.168.1.10:8080", pattern=r"https?://[^\s]+",
                             pattern_help="an http(s) URL")


@dataclass(frozen=True)
class FleetConfig:
    site: str = field(**SITE_FIELD)
    signing_key: Path = field(help="the station's Ed25519 private key file (commands must be signed)")
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    broker: BrokerAdminSettings = field(default_factory=BrokerAdminSettings)
    timeout_s: float = field(5.0, min=0.1, max=300)
    logging: LoggingSettings = field(default_factory=lambda: LoggingSettings(level="WARNING"))

"""Config files: typed loading, clear errors (file, key, expectation), exit status 2; CLI help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from devices.config import SpeakerConfig, load_config
from devices.errors import ConfigError, ThanthienError
from thanthien.tools import ROLE_SCHEMAS, schema_for

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = {role: ROOT / "config" / f"{role}.example.toml" for role in ROLE_SCHEMAS}


def run_cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "thanthien", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60, **kw)


@pytest.mark.parametrize("role", sorted(ROLE_SCHEMAS))
def test_example_configs_are_valid(role):
    cfg = load_config(EXAMPLES[role], schema_for(role))
    assert cfg.site == "phuong-hoai-thanh"


def test_speaker_example_is_typed():
    cfg = load_config(EXAMPLES["speaker"], SpeakerConfig)
    assert cfg.mqtt.port == 8883 and cfg.mqtt.tls is not None
    assert cfg.amp.pin == 17 and isinstance(cfg.data_dir, Path)
    assert cfg.audio.sink == "pyaudio"


def write(tmp_path, text, name="c.toml"):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


BASE = 'site = "p1"\ndevice_id = "loa-1"\ndata_dir = "data"\nstation_keys = ["AAAA"]\n'


def problems(tmp_path, text):
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, text), SpeakerConfig)
    assert isinstance(exc.value, ValueError) and isinstance(exc.value, ThanthienError)
    return str(exc.value)


def test_relative_paths_resolve_against_the_config_file(tmp_path):
    cfg = load_config(write(tmp_path, BASE), SpeakerConfig)
    assert cfg.data_dir == tmp_path.resolve() / "data"


@pytest.mark.parametrize("extra,expected", [
    ('[mqtt]\nhots = "x"\n', 'mqtt.hots: unknown key (did you mean "host"?)'),
    ('[mqtt]\nport = "1883"\n', "mqtt.port: expected an integer, got '1883'"),
    ('[mqtt]\nport = 70000\n', "mqtt.port: must be between 1 and 65535, got 70000"),
    ('volume = 101\n', "volume: must be between 0 and 100"),
    ('volume = true\n', "volume: expected an integer, got True"),
    ('[audio]\nsink = "alsa"\n', "audio.sink: must be 'pyaudio', 'null' or 'wav:PATH'"),
    ('[amp]\npin = 99\n', "amp.pin: must be between 0 and 27"),
    ('mqtt = 5\n', "mqtt: expected a table"),
    ('[mqtt]\nprotocol = "4"\n', "mqtt.protocol: must be one of '5', '3.1.1'"),
    ('[mqtt.tls]\n', "mqtt.tls.ca_file: is required"),
    ('bogus = 1\n', "bogus: unknown key"),
])
def test_invalid_values_name_the_key_and_the_expectation(tmp_path, extra, expected):
    msg = problems(tmp_path, BASE + extra)
    assert expected in msg
    assert str(tmp_path / "c.toml") in msg


def test_every_problem_is_reported_at_once(tmp_path):
    msg = problems(tmp_path, 'site = "P 1"\n[mqtt]\nhots = 1\nport = "x"\n')
    for key in ("site:", "device_id: is required", "data_dir: is required", "mqtt.hots", "mqtt.port"):
        assert key in msg


@pytest.mark.parametrize("content,expected", [
    ("site = ", "not valid TOML"),
    (b"\xff\xfe\x00", "not UTF-8"),
    ("site = 'p1'\n" + "x" * (1024 * 1024 + 1), "may be at most"),
    ('site = "p1\\u0000"\n', "NUL"),
])
def test_unreadable_files(tmp_path, content, expected):
    assert expected in problems(tmp_path, content)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "nope.toml", SpeakerConfig)
    assert "file not found" in str(exc.value)


def test_cli_config_check_exit_codes(tmp_path):
    ok = run_cli("config", "check", "speaker", str(EXAMPLES["speaker"]))
    assert ok.returncode == 0, ok.stderr
    bad = run_cli("config", "check", "speaker", str(write(tmp_path, BASE + "[mqtt]\nport = 0\n")))
    assert bad.returncode == 2
    assert "c.toml" in bad.stderr and "mqtt.port: must be between 1 and 65535, got 0" in bad.stderr
    assert "Traceback" not in bad.stderr
    wrong_role = run_cli("config", "check", "toaster", "x.toml")
    assert wrong_role.returncode == 2 and "invalid choice" in wrong_role.stderr


def test_help_is_well_formed():
    top = run_cli("--help")
    assert top.returncode == 0
    assert top.stdout.startswith("usage: thanthien")
    assert "Chính quyền thân thiện" in top.stdout
    commands = [line.split()[0] for line in top.stdout.split("commands:")[1].splitlines()[2:] if line.startswith("    ")
                and not line.startswith("     ")]
    assert {"config", "keys"} <= set(commands)
    for cmd in commands:
        sub = run_cli(cmd, "--help")
        assert sub.returncode == 0, (cmd, sub.stderr)
        assert sub.stdout.startswith(f"usage: thanthien {cmd}"), cmd
        assert len(sub.stdout.splitlines()) >= 4, cmd


def test_version():
    out = run_cli("--version")
    assert out.returncode == 0 and out.stdout.startswith("thanthien ")


def test_keys_generate_and_public(tmp_path):
    path = tmp_path / "station.key"
    gen = run_cli("keys", "generate", str(path))
    assert gen.returncode == 0 and "created" in gen.stdout
    assert path.stat().st_mode & 0o777 == 0o600
    again = run_cli("keys", "generate", str(path))
    assert "kept existing" in again.stdout
    pub = run_cli("keys", "public", str(path))
    assert pub.returncode == 0 and len(pub.stdout.strip()) == 44
    path.write_text("garbage")
    broken = run_cli("keys", "public", str(path))
    assert broken.returncode == 1 and "cannot read signing key" in broken.stderr


def test_unknown_command_and_args_exit_2():
    assert run_cli("frobnicate").returncode == 2
    assert run_cli("config", "check").returncode == 2

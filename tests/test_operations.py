"""Operations: `thanthien --version`, the NTP check at start, backup and restore."""

from __future__ import annotations

import logging
import os
import re
import select
import sqlite3
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from devices.errors import StorageError
from thanthien import timesync

ROOT = Path(__file__).resolve().parent.parent
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


# --- version -------------------------------------------------------------------------------

def test_version_everywhere():
    from thanthien import __version__

    assert __version__ == VERSION
    for argv in ([sys.executable, "-m", "thanthien", "--version"],
                 [str(Path(sys.executable).parent / "thanthien"), "--version"]):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert out.returncode == 0 and out.stdout == f"thanthien {VERSION}\n", (argv, out)


def test_agent_reports_the_same_version():
    from devices.agent.agent import agent_version

    assert agent_version() == VERSION


# --- time synchronisation -------------------------------------------------------------------

class FakeRun:
    def __init__(self, stdout="", returncode=0, exc=None):
        self.stdout, self.returncode, self.exc, self.calls = stdout, returncode, exc, []

    def __call__(self, argv, **kw):
        self.calls.append(argv)
        if self.exc:
            raise self.exc
        return subprocess.CompletedProcess(argv, self.returncode, self.stdout, "")


@pytest.mark.parametrize("stdout,expected", [("yes\n", True), ("no\n", False), ("", None), ("maybe", None)])
def test_timedatectl_answers(stdout, expected, monkeypatch):
    monkeypatch.setattr(timesync.shutil, "which", lambda name: "/usr/bin/timedatectl")
    run = FakeRun(stdout)
    assert timesync.timedatectl_synchronized(run) is expected
    assert run.calls == [["timedatectl", "show", "-p", "NTPSynchronized", "--value"]]


def test_timedatectl_failures_fall_back_to_the_kernel(monkeypatch):
    monkeypatch.setattr(timesync.shutil, "which", lambda name: "/usr/bin/timedatectl")
    monkeypatch.setattr(timesync, "kernel_synchronized", lambda: False)
    # no D-Bus / not booted with systemd: timedatectl exits 1
    assert timesync.ntp_synchronized(FakeRun("", returncode=1)) is False
    assert timesync.ntp_synchronized(FakeRun(exc=subprocess.TimeoutExpired("timedatectl", 5))) is False
    assert timesync.ntp_synchronized(FakeRun(exc=PermissionError())) is False
    monkeypatch.setattr(timesync.shutil, "which", lambda name: None)
    monkeypatch.setattr(timesync, "kernel_synchronized", lambda: None)
    assert timesync.ntp_synchronized(FakeRun("yes")) is None  # no timedatectl at all: not even tried


def test_kernel_answer_is_a_bool_or_unknown():
    assert timesync.kernel_synchronized() in (True, False, None)
    assert timesync.ntp_synchronized() in (True, False, None)


def test_check_at_start_warns_only_when_unsynchronised(caplog):
    log = logging.getLogger("test.timesync")
    with caplog.at_level(logging.DEBUG, logger="test.timesync"):
        assert timesync.check_at_start(log, "speaker loa-1", probe=lambda: False) is False
        assert timesync.check_at_start(log, "station", probe=lambda: True) is True
        assert timesync.check_at_start(log, "station", probe=lambda: None) is None
    levels = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert levels[0][0] == logging.WARNING and "speaker loa-1" in levels[0][1] and "timedatectl" in levels[0][1]
    assert [lvl for lvl, _ in levels[1:]] == [logging.INFO, logging.DEBUG]


def fake_timedatectl(tmp_path: Path, answer: str) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    script = bin_dir / "timedatectl"
    script.write_text(f"#!/bin/sh\n[ \"$*\" = 'show -p NTPSynchronized --value' ] || exit 3\necho {answer}\n")
    script.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}


def read_until(proc: subprocess.Popen, pattern: str, timeout: float) -> str:
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            seen += line
            if re.search(pattern, line):
                return seen
    return seen + (proc.stdout.read() if proc.poll() is not None else "")


def run_role_until(argv: list[str], env: dict, pattern: str) -> str:
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        return read_until(proc, pattern, timeout=60)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.broker
def test_speaker_and_station_warn_at_start_when_ntp_is_not_synchronised(tmp_path, broker):
    from devices import protocol as p
    from tests.agent_support import write_agent_config
    from tests.station_support import write_station_config

    env = fake_timedatectl(tmp_path, "no")
    key = p.SigningKey.generate()
    cfg = write_agent_config(tmp_path / "loa.toml", device_id="loa-ntp-1", data_dir=tmp_path / "loa", key=key,
                             port=broker.port, sink="null")
    out = run_role_until([sys.executable, "-m", "thanthien", "speaker", "--config", str(cfg)], env,
                         r"not synchronised by NTP")
    assert re.search(r"WARNING.*speaker loa-ntp-1: the system clock is not synchronised by NTP", out), out
    station_cfg = write_station_config(tmp_path / "station.toml", tmp_path / "station", broker.port)
    out = run_role_until([sys.executable, "-m", "thanthien", "station", "--config", str(station_cfg)], env,
                         r"not synchronised by NTP")
    assert re.search(r"WARNING.*station: the system clock is not synchronised by NTP", out), out
    # and with a synchronised clock there is no warning, only the information
    env = fake_timedatectl(tmp_path / "synced", "yes")
    out = run_role_until([sys.executable, "-m", "thanthien", "speaker", "--config", str(cfg)], env,
                         r"synchronised by NTP")
    assert "clock synchronised by NTP" in out and "not synchronised" not in out, out


# --- backup and restore ------------------------------------------------------------------------

@pytest.fixture
def station_db(tmp_path):
    from broadcast import areas
    from broadcast.db import open_db

    db = open_db(tmp_path / "data" / "station.db")
    areas.add_user(db, "admin", "admin", "Quản trị")
    admin = areas.Actor("admin", areas.Role.ADMIN)
    areas.save_group(db, admin, "to-1", "Tổ dân phố 1")
    areas.save_device(db, admin, "loa-1", "Cụm loa chợ", ["to-1"])
    yield db
    db.conn.close()


def count(path: Path, table: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    finally:
        conn.close()


def test_backup_then_restore_brings_back_exactly_the_backup(station_db, tmp_path):
    from broadcast import areas
    from broadcast.backup import backup_now, restore
    from broadcast.db import open_db

    copy = backup_now(station_db, tmp_path / "backups", keep_days=30)
    admin = areas.Actor("admin", areas.Role.ADMIN)
    areas.save_device(station_db, admin, "loa-2", "Cụm loa trường học", ["to-1"])  # after the backup
    live = tmp_path / "data" / "station.db"
    station_db.conn.close()
    assert count(live, "devices") == 2
    kept = restore(copy, live)
    assert not Path(str(live) + "-wal").exists()
    db = open_db(live)
    try:
        assert [r[0] for r in db.execute("SELECT id FROM devices ORDER BY id")] == ["loa-1"]
        assert db.execute("SELECT name FROM groups").fetchone()[0] == "Tổ dân phố 1"
    finally:
        db.conn.close()
    # what was replaced is kept whole (its WAL folded in), so the restore can be undone
    assert kept is not None and count(kept, "devices") == 2


def test_restore_refuses_a_bad_backup_and_changes_nothing(station_db, tmp_path):
    from broadcast.backup import restore

    live = tmp_path / "data" / "station.db"
    station_db.conn.close()
    before = live.read_bytes()
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"SQLite format 3\x00" + b"\x00" * 200)
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE x (a)")
    conn.close()
    for bad, why in ((tmp_path / "missing.db", "no such backup"), (junk, "not"), (other, "not a station database")):
        with pytest.raises(StorageError, match=why):
            restore(bad, live)
    assert live.read_bytes() == before and not list(live.parent.glob("*.before-restore-*"))
    assert not list(live.parent.glob("*.restoring"))


def test_restore_from_the_command_line(station_db, tmp_path):
    from tests.station_support import write_station_config

    cfg = write_station_config(tmp_path / "station.toml", tmp_path / "data", mqtt_port=1)
    run = lambda *a: subprocess.run([sys.executable, "-m", "thanthien", "station", "--config", str(cfg), *a],  # noqa: E731
                                    capture_output=True, text=True, cwd=ROOT, timeout=120)
    station_db.conn.close()
    made = run("backup")
    assert made.returncode == 0, made.stderr
    backup = Path(made.stdout.strip().splitlines()[-1])
    assert backup.is_file()
    done = run("restore", str(backup))
    assert done.returncode == 0, done.stderr
    assert "đã khôi phục" in done.stdout and "before-restore" in done.stdout
    refused = run("restore", str(tmp_path / "nope.db"))
    assert refused.returncode == 1 and "no such backup" in refused.stderr

"""scripts/install.sh (and `make install ROLE=…`): one role per machine, only its dependencies.

The installer is run for real into a staging tree (--destdir), and as a plan (--dry-run);
neither touches the live system (no user, no apt, no systemctl).
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
INSTALL = ROOT / "scripts" / "install.sh"
ROLE_EXTRAS = {"speaker": "speaker", "station": "station,fleet", "kiosk": "kiosk"}
ROLE_USERS = {"speaker": "thanthien", "station": "thanthien", "kiosk": "thanthien-kiosk"}


def install(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(["bash", str(INSTALL), *args], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PIP_NO_INPUT": "1"})
    if check:
        assert out.returncode == 0, out.stdout + out.stderr
    return out


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


@pytest.mark.parametrize("role", sorted(ROLE_EXTRAS))
def test_dry_run_prints_the_plan_and_changes_nothing(role, tmp_path):
    dest = tmp_path / "stage"
    out = install("--role", role, "--dry-run", "--destdir", str(dest)).stdout
    assert not dest.exists(), "a dry run created files"
    # pip installs exactly that role's extra from the copied source
    pip = [line for line in out.splitlines() if line.startswith("+ ") and "/pip install" in line]
    assert len(pip) == 1 and pip[0].replace("\\", "").endswith(f"/opt/thanthien/src[{ROLE_EXTRAS[role]}]"), pip
    assert f"systemctl enable thanthien-{role}.service" in out and "~ skipped (--destdir)" in out
    assert f"/etc/thanthien/{role}.toml" in out and f"config/{role}.example.toml" in out
    assert f"install -d -m 0750 {dest}/var/lib/thanthien/{role}" in out
    assert ("mosquitto.service.d" in out) == (role == "station")
    assert ("config/fleet.example.toml" in out) == (role == "station")
    assert ("set-default graphical.target" in out) == (role == "kiosk")
    user = ROLE_USERS[role]
    assert f"== 2. user {user}" in out
    if subprocess.run(["getent", "passwd", user], capture_output=True).returncode != 0:
        assert re.search(rf"^~ skipped \(--destdir\): useradd --system .* {re.escape(user)}$", out, re.M), out


def test_dry_run_without_destdir_plans_live_changes(tmp_path):
    out = install("--role", "speaker", "--dry-run", "--prefix", "/srv/tt").stdout
    assert "+ apt-get update" in out and "portaudio19-dev" in out
    assert "+ systemctl enable thanthien-speaker.service" in out and "skipped" not in out
    assert "+ usermod --append --groups audio\\,gpio thanthien" in out
    assert "s#/opt/thanthien#/srv/tt#g" in out and "/srv/tt/venv/bin/pip install" in out


def test_bad_arguments_are_refused():
    assert install(check=False).returncode == 2
    bad = install("--role", "tivi", "--dry-run", check=False)
    assert bad.returncode == 2 and "unknown role" in bad.stderr
    assert install("--role", "speaker", "--prefix", "relative", "--dry-run", check=False).returncode == 2
    if os.geteuid() != 0:
        assert "run as root" in install("--role", "speaker", check=False).stderr


def seed_build_tools(venv: Path) -> None:
    """Give a new venv the build tools (setuptools, wheel, packaging) of this interpreter.

    On a Pi the installer's pip gets them from the index or the wheelhouse; the test must
    run offline, so it copies the installed files, as an earlier install would have left them.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "python"), "-m", "ensurepip", "--default-pip"], check=True,
                   capture_output=True, timeout=300)
    site = next((venv / "lib").glob("python3*/site-packages"))
    for name in ("setuptools", "wheel", "packaging"):
        dist = md.distribution(name)
        for f in dist.files or []:
            src = Path(dist.locate_file(f))
            if ".." in f.parts or not src.is_file():
                continue  # console scripts live in bin/, not needed for a build
            dst = site / f
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)


def test_destdir_install_of_a_speaker(tmp_path):
    dest = tmp_path / "stage"
    prefix = "/opt/tt"
    seed_build_tools(dest / prefix.lstrip("/") / "venv")
    args = ["--role", "speaker", "--destdir", str(dest), "--prefix", prefix, "--no-apt",
            "--pip-args", "--no-deps --no-index --no-build-isolation"]
    out = install(*args).stdout
    files = tree(dest)
    config = dest / "etc/thanthien/speaker.toml"
    assert config.read_bytes() == (ROOT / "config/speaker.example.toml").read_bytes()
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert (dest / "var/lib/thanthien/speaker").is_dir()
    assert stat.S_IMODE((dest / "var/lib/thanthien/speaker").stat().st_mode) == 0o750
    unit = (dest / "etc/systemd/system/thanthien-speaker.service").read_text()
    assert "ExecStart=/opt/tt/venv/bin/thanthien speaker --config /etc/thanthien/speaker.toml" in unit
    assert "/opt/thanthien" not in unit
    assert "etc/systemd/journald.conf.d/thanthien.conf" in files
    assert not any("mosquitto" in f for f in files if not f.startswith("opt/"))
    assert "var/lib/thanthien/kiosk" not in files
    assert "etc/systemd/system/thanthien-station.service" not in files
    assert (dest / "opt/tt/src/docs").is_dir() and not (dest / "opt/tt/src/.venv").exists()
    # the venv works: the command runs from it and reports its version
    exe = dest / "opt/tt/venv/bin/thanthien"
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    assert re.fullmatch(r"thanthien \d+\.\d+\.\d+\S*\n", version.stdout), version
    for step in ("useradd", "chown", "systemctl enable", "systemctl daemon-reload"):
        assert any(line.startswith("~ skipped (--destdir)") and step in line for line in out.splitlines()), step

    # run again (an upgrade): an edited config is kept, the venv is reused
    config.write_text(config.read_text().replace('device_id = "loa-to1-01"', 'device_id = "loa-cho-02"'))
    again = install(*args).stdout
    assert "kept the existing" in again and "loa-cho-02" in config.read_text()
    assert "-m venv" not in again


# --- which packages each role pulls in ---------------------------------------------------

def extras_of_project() -> dict[str, list[str]]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def closure(extras: list[str]) -> set[str]:
    """Every distribution (canonical name) that `pip install 'thanthien[extras]'` pulls in.

    The project's extras come from pyproject.toml (following `thanthien[...]` references);
    third-party requirements are followed through the metadata of the packages installed
    in this venv (`make deps` installs every role, so each one is here).
    """
    project = extras_of_project()
    todo: list[tuple[Requirement, str]] = []
    seen_extras: set[str] = set()

    def add_extra(name: str) -> None:
        if name in seen_extras:
            return
        seen_extras.add(name)
        for spec in project[name]:
            req = Requirement(spec)
            if canonicalize_name(req.name) == "thanthien":
                for sub in req.extras:
                    add_extra(sub)
            else:
                todo.append((req, ""))

    for e in extras:
        add_extra(e)
    found: set[str] = set()
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(req.name)
        wanted = {(name, x) for x in req.extras} | {(name, "")}
        if all(w in found for w in wanted):
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            pytest.fail(f"{name} (needed by {extras}) is not installed in this venv; run `make deps`")
        for x in sorted({""} | set(req.extras)):
            if (name, x) in found:
                continue
            found.add((name, x))
            for spec in dist.requires or []:
                todo.append((Requirement(spec), x))
    return {n for n, _x in found}


HEAVY = {"kivy", "fastapi", "uvicorn", "jinja2", "starlette"}


def test_speaker_closure_has_no_ui_or_web_stack():
    deps = closure(["speaker"])
    assert {"paho-mqtt", "miniaudio", "gpiozero", "cryptography", "sqlite-utils", "sdnotify"} <= deps
    assert not deps & HEAVY, sorted(deps & HEAVY)


def test_each_role_gets_its_own_stack_only():
    station = closure(ROLE_EXTRAS["station"].split(","))
    kiosk = closure(ROLE_EXTRAS["kiosk"].split(","))
    assert {"fastapi", "uvicorn", "jinja2"} <= station and "kivy" not in station
    assert "kivy" in kiosk and not kiosk & {"fastapi", "uvicorn", "jinja2", "starlette"}


def test_make_install_calls_the_script():
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    out = subprocess.run([make, "-s", "install", "ROLE=speaker", "INSTALL_ARGS=--dry-run --no-apt"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "role speaker, extras [speaker]" in out.stdout and "dry run" in out.stdout
    assert subprocess.run([make, "-s", "install"], cwd=ROOT, capture_output=True, timeout=60).returncode != 0

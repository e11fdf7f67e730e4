"""`thanthien demo`: the whole system on one machine, from nothing.

Starts a private Mosquitto on a free loopback port, writes configs for every role into
the demo directory, and runs each role that this install has as its own process
(one process per role, as in production): the station, a few simulated speaker nodes
whose audio goes to wav files, and the kiosk (on the real display when there is one,
otherwise under Xvfb). Ctrl-C (or --duration) stops everything in reverse order.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .cli import add_command

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEMO_SITE = "phuong-demo"  # must match demo_roles.DEMO_SITE
DEMO_GROUPS = ("to-1", "to-2", "to-3")


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "demo", "run the whole system locally: broker, station, simulated speakers, kiosk",
                    description=__doc__)
    p.add_argument("--dir", type=Path, default=PROJECT_ROOT / "var" / "demo",
                   help="where the demo keeps its data, configs and wav output (default: var/demo)")
    p.add_argument("--speakers", type=int, default=6, help="simulated speaker nodes (default 6)")
    p.add_argument("--no-kiosk", action="store_true", help="do not start the kiosk window")
    p.add_argument("--duration", type=float, default=None,
                   help="stop by itself after this many seconds (default: run until Ctrl-C)")
    p.add_argument("--fresh", action="store_true", help="delete the demo directory first")
    p.set_defaults(func=run_demo)


def role_available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    #: stopped only once every other child has exited (a display server its clients draw on)
    last: bool = False


class Supervisor:
    """Starts children with their output in log files; stops them in reverse order."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.children: list[Child] = []

    def start(self, child: Child) -> None:
        child.log_path = self.log_dir / f"{child.name}.log"
        log = open(child.log_path, "ab")
        child.proc = subprocess.Popen(child.argv, stdout=log, stderr=subprocess.STDOUT,
                                      env={**os.environ, **child.env}, cwd=PROJECT_ROOT, start_new_session=True)
        log.close()
        self.children.append(child)

    def check(self) -> list[Child]:
        """Children that have died."""
        return [c for c in self.children if c.proc is not None and c.proc.poll() is not None]

    def stop_all(self, timeout: float = 5.0) -> None:
        for group in ([c for c in self.children if not c.last], [c for c in self.children if c.last]):
            for child in reversed(group):
                if child.proc is not None and child.proc.poll() is None:
                    child.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for child in reversed(group):
                if child.proc is None:
                    continue
                try:
                    child.proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.proc.kill()
                    child.proc.wait()


def write_speaker_config(path: Path, device_id: str, public_key: str, port: int, data_dir: Path) -> None:
    from devices.config import toml_string as _toml_str

    path.write_text(
        f"site = {_toml_str(DEMO_SITE)}\n"
        f"device_id = {_toml_str(device_id)}\n"
        f"data_dir = {_toml_str(data_dir)}\n"
        f"station_keys = [{_toml_str(public_key)}]\n"
        "telemetry_interval_s = 10\n"
        f"[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\n"
        f"[audio]\nsink = {_toml_str('wav:' + str(data_dir / 'out.wav'))}\n", "utf-8")


def run_demo(args: argparse.Namespace) -> int:
    from devices.broker import MosquittoProcess
    from devices.protocol import SigningKey

    t_start = time.monotonic()
    base: Path = args.dir.resolve()
    if args.fresh and base.exists():
        shutil.rmtree(base)
    for sub in ("broker", "logs", "station", "speakers", "kiosk"):
        (base / sub).mkdir(parents=True, exist_ok=True)

    broker = MosquittoProcess(base / "broker")
    broker.start()
    sup = Supervisor(base / "logs")
    stopping = False

    def on_signal(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"thanthien demo — dữ liệu tại {base}")
    print(f"  MQTT broker (riêng): 127.0.0.1:{broker.port}  (log: {broker.data_dir / 'mosquitto.log'})")
    key = SigningKey.load_or_create(base / "station" / "station.key")  # the station signs with this same file
    exe = [sys.executable, "-m", "thanthien"]
    started: list[str] = []
    try:
        if role_available("broadcast.service"):
            from devices.errors import ThanthienError

            from .demo_roles import start_station
            try:
                started.append(start_station(sup, exe, base, broker.port, key, started_at=t_start))
            except ThanthienError as exc:  # the demo goes on without the station, and says why
                print(f"  ! the station could not start: {exc}", file=sys.stderr)
        if role_available("devices.agent.cli"):
            for i in range(args.speakers):
                device_id = f"loa-{DEMO_GROUPS[i % len(DEMO_GROUPS)]}-{i // len(DEMO_GROUPS) + 1:02d}"
                data_dir = base / "speakers" / device_id
                data_dir.mkdir(exist_ok=True)
                cfg = base / "speakers" / f"{device_id}.toml"
                write_speaker_config(cfg, device_id, key.public.to_text(), broker.port, data_dir)
                sup.start(Child(f"speaker-{device_id}", exe + ["speaker", "--config", str(cfg)]))
            started.append(f"{args.speakers} loa mô phỏng, âm thanh ghi vào {base / 'speakers'}/*/out.wav")
        if not args.no_kiosk and role_available("kiosk.ui"):
            from .demo_roles import start_kiosk
            started.append(start_kiosk(sup, exe, base, broker.port))
        for text in started:
            for line in text.splitlines():
                print("  " + line)
        missing = [name for name, mod in (("station", "broadcast.service"), ("speaker", "devices.agent.cli"),
                                          ("kiosk", "kiosk.ui")) if not role_available(mod)]
        if missing:
            print("  (chưa có trong bản cài này: " + ", ".join(missing) + ")")
        print(f"  nhật ký: {base / 'logs'}   — nhấn Ctrl-C để dừng")
        sys.stdout.flush()
        deadline = None if args.duration is None else time.monotonic() + args.duration
        while not stopping and (deadline is None or time.monotonic() < deadline):
            for dead in sup.check():
                print(f"  ! {dead.name} stopped with status {dead.proc.returncode}; see {dead.log_path}",
                      file=sys.stderr)
                sup.children.remove(dead)
            if not broker.running:
                print("  ! the broker stopped; see its log", file=sys.stderr)
                return 1
            time.sleep(0.2)
    finally:
        sup.stop_all()
        broker.stop()
        print("thanthien demo: đã dừng mọi tiến trình.")
    return 0

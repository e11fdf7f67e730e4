"""Run a private Mosquitto from the project's own config (tests and `make demo`).

The process can be stopped, killed and restarted mid-test on the same port and data
directory, which is what the fault tests need.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from .errors import ThanthienError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TEMPLATE = PROJECT_ROOT / "config" / "mosquitto" / "local.conf.in"


class BrokerError(ThanthienError, RuntimeError):
    """The private broker could not be started."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    return False


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None)


class BrokerProcess:
    """A broker child process on loopback: stop (graceful), kill (crash), restart.

    Subclasses set ``proc`` in ``start()``.
    """

    host = "127.0.0.1"
    proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> "BrokerProcess":  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """Graceful stop (SIGTERM): the broker saves its persistent sessions."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close_pipes()

    def kill(self) -> None:
        """SIGKILL: a crash, nothing saved since the last autosave."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_pipes()

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        if down_for:
            time.sleep(down_for)
        self.start()

    def _close_pipes(self) -> None:
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class MosquittoProcess(BrokerProcess):
    """A Mosquitto child process bound to 127.0.0.1 on its own port and data directory."""

    def __init__(self, data_dir: Path, *, port: int | None = None, template: Path = DEFAULT_TEMPLATE,
                 extra: dict[str, str] | None = None):
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.template = template
        self.extra = extra or {}
        self.proc: subprocess.Popen | None = None
        self.conf_path = self.data_dir / "mosquitto.conf"

    def render(self) -> str:
        values = {"port": self.port, "data_dir": self.data_dir, "user": getpass.getuser(), **self.extra}
        return self.template.read_text("utf-8").format(**values)

    def start(self, timeout: float = 10.0) -> "MosquittoProcess":
        exe = find_mosquitto()
        if exe is None:
            raise BrokerError("mosquitto is not installed; run `make system-packages`")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self.render(), "utf-8")
        self.proc = subprocess.Popen([exe, "-c", str(self.conf_path)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        if not wait_for_port(self.host, self.port, timeout):
            err = b""
            if self.proc.poll() is not None and self.proc.stderr:
                err = self.proc.stderr.read()
            self.kill()
            log = self.data_dir / "mosquitto.log"
            tail = log.read_text("utf-8", "replace")[-800:] if log.exists() else ""
            raise BrokerError(f"mosquitto did not listen on {self.port}: {err.decode(errors='replace')}{tail}")
        return self

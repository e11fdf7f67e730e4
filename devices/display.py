"""A virtual X display (Xvfb) for the kiosk on a headless box: tests and the demo."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from .errors import ThanthienError


class DisplayError(ThanthienError, RuntimeError):
    pass


class XvfbProcess:
    """Start Xvfb on the first free display number; ``display`` is the DISPLAY value."""

    def __init__(self, width: int = 1920, height: int = 1080, depth: int = 24):
        self.size = (width, height, depth)
        self.proc: subprocess.Popen | None = None
        self.display: str | None = None

    def start(self, timeout: float = 10.0) -> "XvfbProcess":
        exe = shutil.which("Xvfb")
        if exe is None:
            raise DisplayError("Xvfb is not installed; run `make system-packages`")
        w, h, d = self.size
        for number in range(90, 190):
            if Path(f"/tmp/.X{number}-lock").exists() or Path(f"/tmp/.X11-unix/X{number}").exists():
                continue
            proc = subprocess.Popen([exe, f":{number}", "-screen", "0", f"{w}x{h}x{d}", "-nolisten", "tcp",
                                     "-noreset"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    break  # lost a race for that number; try the next
                if Path(f"/tmp/.X11-unix/X{number}").exists():
                    self.proc, self.display = proc, f":{number}"
                    return self
                time.sleep(0.05)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        raise DisplayError("could not start Xvfb on any display :90-:189")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def env(self) -> dict[str, str]:
        return {**os.environ, "DISPLAY": self.display or ""}

    def __enter__(self) -> "XvfbProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

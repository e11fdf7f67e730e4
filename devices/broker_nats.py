"""A private NATS server with its MQTT listener (JetStream on), for portability tests:
the same start/stop/kill/restart interface as MosquittoProcess. NATS speaks MQTT 3.1.1
only, so clients use ``MqttSettings(protocol="3.1.1")``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .broker import BrokerError, BrokerProcess, free_port, wait_for_port


class NatsMqttProcess(BrokerProcess):
    def __init__(self, data_dir: Path, *, port: int | None = None):
        self.data_dir = Path(data_dir)
        self.port = port or free_port()          # the MQTT listener
        self.client_port = free_port()           # NATS' own protocol (unused by thanthien)
        self.proc: subprocess.Popen | None = None
        self.conf_path = self.data_dir / "nats.conf"

    def render(self) -> str:
        return (f'server_name: "thanthien-{self.port}"\n'
                f"listen: {self.host}:{self.client_port}\n"
                f'jetstream {{ store_dir: "{self.data_dir / "jetstream"}" }}\n'
                f"mqtt {{ listen: {self.host}:{self.port} }}\n")

    def start(self, timeout: float = 20.0) -> "NatsMqttProcess":
        exe = shutil.which("nats-server") or "/usr/sbin/nats-server"
        if not Path(exe).exists():
            raise BrokerError("nats-server is not installed; run `make system-packages`")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self.render(), "utf-8")
        log = open(self.data_dir / "nats.log", "ab")
        self.proc = subprocess.Popen([exe, "-c", str(self.conf_path)], stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        if not wait_for_port(self.host, self.port, timeout):
            self.kill()
            raise BrokerError(f"nats-server did not open its MQTT listener on {self.port}: "
                              + (self.data_dir / "nats.log").read_text(errors="replace")[-800:])
        return self

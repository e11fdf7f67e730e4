"""`thanthien speaker --config FILE`: run the agent of one loudspeaker cluster."""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path

from thanthien.cli import add_command

DEFAULT_CONFIG = Path("/etc/thanthien/speaker.toml")


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "speaker", "run a speaker node agent (plays its schedule even when offline)",
                    description="Run the agent of one loudspeaker cluster: obeys signed MQTT commands, keeps its "
                                "schedule in SQLite and plays it by its own clock, drives the amplifier relay, "
                                "reports status, telemetry and every play.",
                    epilog="Exit status: 0 stopped, 2 invalid config, 75 restart requested (systemd restarts it).")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=f"the node's TOML config (default {DEFAULT_CONFIG})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from devices.agent.agent import Agent
    from devices.config import SpeakerConfig, load_config, setup_logging

    cfg = load_config(args.config, SpeakerConfig)
    setup_logging(cfg.logging, f"speaker:{cfg.device_id}")
    from thanthien.timesync import check_at_start

    check_at_start(logging.getLogger("thanthien.speaker"), f"speaker {cfg.device_id}")
    notify = None
    try:
        import sdnotify

        notifier = sdnotify.SystemdNotifier()
        notify = notifier.notify
    except ImportError:  # pragma: no cover - part of the speaker extra
        pass
    agent = Agent(cfg)

    def on_signal(signum, frame):
        logging.getLogger("thanthien.speaker").info("signal %d: stopping", signum)
        agent.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent.start()
    try:
        code = agent.run_forever(notify)
    finally:
        agent.close()
    return code

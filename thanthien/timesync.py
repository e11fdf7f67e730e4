"""Is this machine's clock synchronised by NTP? Every role starts with this check.

Speaker nodes fire scheduled bulletins by their own wall clock, and proof-of-play,
ratings and reports carry times: a clock that drifted or never synchronised (a Pi has no
battery-backed clock) is a silent fault. The station and the agent log a warning at start
when the clock is not synchronised; the agent also reports it in its telemetry.

Sources, first that answers: systemd's ``timedatectl show -p NTPSynchronized --value``
(systemd-timesyncd, chrony or ntpd behind it), then the kernel's own flag through
``adjtimex`` (what every NTP daemon sets). Without either the answer is None (unknown),
never an exception.
"""

from __future__ import annotations

import ctypes
import logging
import shutil
import subprocess
from typing import Callable

TIMEDATECTL = ("timedatectl", "show", "-p", "NTPSynchronized", "--value")
TIME_ERROR = 5  # adjtimex() return value when STA_UNSYNC is set: the clock is not synchronised


def timedatectl_synchronized(run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> bool | None:
    """yes/no from timedatectl; None when it is missing or cannot ask systemd (no D-Bus, a container)."""
    if shutil.which(TIMEDATECTL[0]) is None:
        return None
    try:
        out = run(list(TIMEDATECTL), capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    value = out.stdout.strip().lower()
    if value in ("yes", "true", "1"):
        return True
    if value in ("no", "false", "0"):
        return False
    return None


def kernel_synchronized() -> bool | None:
    """The kernel's view (adjtimex, read only), None when it cannot be asked."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(512)  # struct timex with modes = 0: read only
        state = libc.adjtimex(buf)
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != TIME_ERROR


def ntp_synchronized(run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> bool | None:
    answer = timedatectl_synchronized(run)
    return answer if answer is not None else kernel_synchronized()


def check_at_start(logger: logging.Logger, role: str,
                   probe: Callable[[], bool | None] = ntp_synchronized) -> bool | None:
    """Log a warning when the clock is not NTP-synchronised (info when it is, debug when unknown)."""
    synced = probe()
    if synced is False:
        logger.warning("%s: the system clock is not synchronised by NTP; scheduled plays and the times in "
                       "reports follow this clock. Check `timedatectl` and the NTP server "
                       "(systemd-timesyncd, chrony).", role)
    elif synced:
        logger.info("%s: system clock synchronised by NTP", role)
    else:
        logger.debug("%s: cannot tell whether the clock is NTP-synchronised", role)
    return synced
